"""Appending a file to an initrd, as an extra gzip-compressed newc cpio archive.

Linux unpacks every archive of an initramfs in turn, compressed or not, so
a kickstart or preseed is added by appending one more small archive holding
it at the root (``/ks.cfg``, ``/preseed.cfg``), as Oz does.  The original
bytes are kept as they are; zeros pad them to a 4-byte boundary, which the
kernel skips between archives.
"""

from __future__ import annotations

import gzip
import os
import shutil

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
#: A regular file, rw-r--r--.
REGULAR_FILE_0644 = 0o100644


def _pad4(length: int) -> bytes:
    return bytes(-length % 4)


def newc_entry(name: str, data: bytes, mode: int, inode: int) -> bytes:
    """One newc member: header, NUL-ended name and data, each padded to 4 bytes."""
    encoded = name.encode("utf-8") + b"\0"
    # ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)
    head = header + encoded
    return head + _pad4(len(head)) + data + _pad4(len(data))


def newc_archive(members: dict[str, bytes]) -> bytes:
    """A newc cpio archive of regular files (mode 0644, owned by root), ending with its trailer."""
    parts = [
        newc_entry(name, data, REGULAR_FILE_0644, inode) for inode, (name, data) in enumerate(members.items(), start=1)
    ]
    parts.append(newc_entry(TRAILER, b"", 0, 0))
    return b"".join(parts)


def append_file(initrd_path: str, name: str, data: bytes) -> None:
    """Append ``data`` as the root file ``name`` to the initrd at ``initrd_path`` (blocking)."""
    # mtime=0: the same answer file gives the same bytes.
    member = gzip.compress(newc_archive({name: data}), mtime=0)
    with open(initrd_path, "r+b") as initrd:
        end = initrd.seek(0, os.SEEK_END)
        initrd.write(_pad4(end) + member)


def copy_and_append(source: str, destination: str, name: str, data: bytes) -> str:
    """Copy the initrd ``source`` to ``destination`` and append ``name`` to the copy (blocking)."""
    partial = destination + ".partial"
    shutil.copyfile(source, partial)
    append_file(partial, name, data)
    os.replace(partial, destination)
    return destination
