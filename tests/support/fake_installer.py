"""A stand-in for a distribution's installer, for tests that boot a real virtual machine.

It is a real Debian kernel (downloaded once with ``apt-get download`` into a
cache: ``$IMGFAC_TEST_CACHE``, default ``~/.cache/imgfac-test``) and a tiny
busybox-static initramfs whose ``/init``:

* mounts proc, sys and devtmpfs and loads the virtio modules (PEERS.md's order);
* looks for ``/ks.cfg`` or ``/preseed.cfg`` at the root of the initramfs (the
  factory appends it to the initrd as an extra compressed newc archive);
* writes ``IMGFAC-FAKE-INSTALL``, the file's sha256 and name, its length and
  its bytes at the start of ``/dev/vda`` (see ``parse_result``), then powers off;
* without either file, prints ``MISSING_MARKER`` and powers off without writing.

With ``writes=False`` it never writes: it prints a line every two seconds and
waits forever, for the inactivity-timeout tests.

``lay_out_tree`` puts kernel and initrd where Fedora-style (``.treeinfo``) and
Debian-style (netboot) URL installs look for them; ``serve_tree`` serves a tree
over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RESULT_HEADER = b"IMGFAC-FAKE-INSTALL\n"


def manifest_package() -> str:
    """The package manifest line the fake installer prints (name, version, arch): the host's busybox-static,
    whose binary it carries."""
    version = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version} ${Architecture}", "busybox-static"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"busybox-static {version}"


#: Printed on the console when the initrd holds no kickstart or preseed.
MISSING_MARKER = "fake-installer: ERROR: no /ks.cfg or /preseed.cfg in the initrd; the disk is left untouched"
#: Printed on the console once the result is on the disk.
WROTE_MARKER = "fake-installer: result written to /dev/vda"
#: Printed every two seconds by the installer that never writes.
IDLE_MARKER = "fake-installer: still thinking, writing nothing"
#: PEERS.md: Debian's kernel has virtio as modules, loaded in this order.
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk")
BUSYBOX = "/bin/busybox"
#: Where the two kinds of install tree keep the kernel and initrd.
FEDORA_KERNEL = "images/pxeboot/vmlinuz"
FEDORA_INITRD = "images/pxeboot/initrd.img"
DEBIAN_NETBOOT = "dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64"
DEBIAN_KERNEL = f"{DEBIAN_NETBOOT}/linux"
DEBIAN_INITRD = f"{DEBIAN_NETBOOT}/initrd.gz"


def cache_dir() -> Path:
    """Where downloaded kernels are kept between runs."""
    return Path(os.environ.get("IMGFAC_TEST_CACHE") or Path.home() / ".cache" / "imgfac-test")


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: its images and the virtio modules, by name."""

    version: str
    #: The compressed bzImage, as Debian ships it.
    vmlinuz: Path
    modules: dict[str, Path]
    #: The same kernel uncompressed (ELF), when it has a PVH entry QEMU can boot directly.
    vmlinux: Path | None = None

    @property
    def bootable(self) -> Path:
        """The image the tests boot: vmlinux when there is one.

        Under software emulation, decompressing the bzImage is the slowest
        part of the boot (some 5-8 s of a 14-19 s fake install here); QEMU
        boots the uncompressed ELF through its PVH entry without it.
        """
        return self.vmlinux or self.vmlinuz


def current_kernel_package() -> str:
    """The name of the kernel package ``linux-image-amd64`` points to now, e.g. ``linux-image-6.1.0-56-amd64``."""
    output = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], check=True, capture_output=True, text=True
    ).stdout
    found = re.search(r"Depends: (linux-image-\d\S*-amd64)\b", output)
    if found is None:
        raise RuntimeError(f"apt-cache names no kernel package for linux-image-amd64:\n{output}")
    return found.group(1)


def debian_kernel() -> Kernel:
    """The current Debian kernel and its virtio modules, downloaded and unpacked once into the cache.

    Without apt's package lists (``apt-get update`` never run) the newest cached kernel is used.
    """
    try:
        package = current_kernel_package()
    except (OSError, subprocess.CalledProcessError, RuntimeError):
        cached = sorted(cache_dir().glob("linux-image-*-amd64/vmlinuz"), key=lambda path: path.stat().st_mtime)
        if not cached:
            raise
        package = cached[-1].parent.name
    version = package.removeprefix("linux-image-")
    home = cache_dir() / package
    vmlinuz = home / "vmlinuz"
    modules = {name: home / f"{name}.ko" for name in VIRTIO_MODULES}
    if not all(path.exists() for path in (vmlinuz, *modules.values())):
        _download_kernel(package, version, home)
    return Kernel(version, vmlinuz, modules, _uncompressed(vmlinuz, home / "vmlinux"))


def _uncompressed(bzimage: Path, target: Path) -> Path | None:
    """``target``, made once from the ELF kernel inside ``bzimage`` if it has a PVH entry; else None."""
    marker = target.with_suffix(".none")
    if target.exists():
        return target
    if marker.exists():
        return None
    elf = _payload(bzimage.read_bytes())
    if elf is None or not _has_pvh_entry(elf):
        marker.touch()
        return None
    partial = target.with_suffix(".part")
    partial.write_bytes(elf)
    os.replace(partial, target)
    return target


def _payload(bzimage: bytes) -> bytes | None:
    """The ELF kernel compressed inside a bzImage (xz or gzip), found by trying each magic number's places."""
    for magic, decompressor in (
        (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    ):
        start = bzimage.find(magic)
        while start != -1:
            try:
                elf = decompressor().decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF"):
                return elf
            start = bzimage.find(magic, start + 1)
    return None


def _has_pvh_entry(elf: bytes) -> bool:
    """True when a 64-bit ELF has the Xen PHYS32_ENTRY note (type 18) QEMU's PVH boot needs."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        kind, _, offset, _, _, size = struct.unpack_from("<IIQQQQ", elf, phoff + index * phentsize)
        if kind != 4:  # PT_NOTE
            continue
        position, end = offset, offset + size
        while position + 12 <= end:
            namesz, descsz, note_type = struct.unpack_from("<III", elf, position)
            name = elf[position + 12 : position + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note_type == 18:
                return True
            position += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _download_kernel(package: str, version: str, home: Path) -> None:
    """Fetch the .deb and keep only the kernel image and the virtio modules (uncompressed)."""
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home) as scratch:
        subprocess.run(["apt-get", "download", "-q", package], cwd=scratch, check=True, capture_output=True)
        (deb,) = Path(scratch).glob("*.deb")
        # dpkg -x of the whole package writes some 400 MB: take only what the initramfs needs.
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(
            [
                "tar",
                "-x",
                "-C",
                str(scratch),
                "--wildcards",
                f"./boot/vmlinuz-{version}",
                f"./lib/modules/{version}/kernel/drivers/virtio/*",
                f"./lib/modules/{version}/kernel/drivers/block/*",
            ],
            stdin=tar.stdout,
            check=True,
        )
        if tar.wait() != 0:
            raise RuntimeError(f"dpkg-deb could not read {deb}")
        tree = Path(scratch) / "lib" / "modules" / version
        for name in VIRTIO_MODULES:
            _copy_module(tree, name, home / f"{name}.ko")
        shutil.copyfile(Path(scratch) / "boot" / f"vmlinuz-{version}", home / "vmlinuz.part")
        os.replace(home / "vmlinuz.part", home / "vmlinuz")


def _copy_module(tree: Path, name: str, target: Path) -> None:
    """Copy module ``name`` from ``tree``, decompressing a .ko.xz (busybox insmod takes plain .ko only)."""
    found = list(tree.rglob(f"{name}.ko")) + list(tree.rglob(f"{name}.ko.xz"))
    if not found:
        raise RuntimeError(f"the kernel package has no module {name}")
    data = found[0].read_bytes()
    if found[0].suffix == ".xz":
        data = lzma.decompress(data)
    # Written aside and renamed: another test run may be reading the cache.
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    os.replace(partial, target)


# --- newc cpio archives -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a newc archive: a directory, a regular file, a symlink or a character device."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(name: str) -> Entry:
    return Entry(name, 0o040755)


def regular(name: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(name, 0o100755 if executable else 0o100644, data)


def char_device(name: str, major: int, minor: int) -> Entry:
    return Entry(name, 0o020600, rdev=(major, minor))


def newc_archive(entries: Iterable[Entry]) -> bytes:
    """An uncompressed newc ("070701") cpio archive of ``entries``, with its trailer."""
    chunks = []
    for inode, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (inode, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1], len(name), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        chunks.append(_padded(header + name) + _padded(entry.data))
    return b"".join(chunks)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def append_member(initrd: bytes, name: str, data: bytes) -> bytes:
    """``initrd`` with one more gzip-compressed newc archive holding ``/name`` (as the factory injects a kickstart)."""
    return _padded(initrd) + gzip.compress(newc_archive([regular(name, data)]), mtime=0)


# --- the initramfs ----------------------------------------------------------------------------------------------


def init_script(writes: bool = True) -> str:
    """The ``/init`` of the fake installer (busybox sh)."""
    load = "\n".join(
        f"insmod /lib/modules/{name}.ko || echo 'fake-installer: insmod {name} failed'" for name in VIRTIO_MODULES
    )
    if writes:
        work = f"""
found=""
for candidate in /ks.cfg /preseed.cfg; do
    [ -f "$candidate" ] && found="$candidate" && break
done
if [ -z "$found" ]; then
    echo '{MISSING_MARKER}'
else
    echo "fake-installer: installing from $found"
    {{ echo IMGFAC-FAKE-INSTALL; sha256sum "$found"; wc -c < "$found"; cat "$found"; }} > /tmp/result
    dd if=/tmp/result of=/dev/vda bs=4096 conv=fsync 2>/dev/null
    sync
    echo '{WROTE_MARKER}'
    # What an answer file's last step prints (imgfac_twisted/os/manifest.py): this stand-in's one package.
    echo IMGFAC-MANIFEST-BEGIN
    echo "IMGFAC-PKG {manifest_package()}"
    echo IMGFAC-MANIFEST-END
fi
"""
    else:
        work = f"""
while true; do
    echo '{IDLE_MARKER}'
    sleep 2
done
"""
    return f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "fake-installer: started, kernel $(uname -r)"
{load}
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/vda ] || echo 'fake-installer: no /dev/vda'
{work}
echo 'fake-installer: powering off'
poweroff -f
sleep 60
"""


def build_initramfs(kernel: Kernel, writes: bool = True) -> bytes:
    """A gzip-compressed newc initramfs: static busybox, the virtio modules and the fake installer's /init."""
    busybox = Path(BUSYBOX).read_bytes()
    if _is_dynamic_elf(busybox):
        raise RuntimeError(f"{BUSYBOX} is dynamically linked: install busybox-static (scripts/libvirt-up.sh does)")
    entries = [directory(name) for name in ("bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp")]
    entries.append(char_device("dev/console", 5, 1))
    entries.append(regular("bin/busybox", busybox, executable=True))
    entries.append(regular("init", init_script(writes).encode(), executable=True))
    entries += [regular(f"lib/modules/{name}.ko", path.read_bytes()) for name, path in kernel.modules.items()]
    return gzip.compress(newc_archive(entries), compresslevel=6, mtime=0)


def _is_dynamic_elf(binary: bytes) -> bool:
    """True when a 64-bit little-endian ELF has a PT_INTERP program header (needs a dynamic loader)."""
    (phoff,) = struct.unpack_from("<Q", binary, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", binary, 0x36)
    return any(struct.unpack_from("<I", binary, phoff + index * phentsize)[0] == 3 for index in range(phnum))


@functools.cache
def initramfs(writes: bool = True) -> bytes:
    """``build_initramfs`` for the current kernel, made once per test run."""
    return build_initramfs(debian_kernel(), writes)


@dataclass(frozen=True)
class InstallResult:
    """What the fake installer wrote at the start of the disk."""

    name: str
    sha256: str
    content: bytes


def parse_result(disk_start: bytes) -> InstallResult:
    """Read the fake installer's result from the first bytes of the disk; ValueError if it is not there."""
    if not disk_start.startswith(RESULT_HEADER):
        raise ValueError(f"the disk does not start with {RESULT_HEADER!r}: {disk_start[:40]!r}")
    rest = disk_start[len(RESULT_HEADER) :]
    checksum_line, rest = rest.split(b"\n", 1)
    length_line, rest = rest.split(b"\n", 1)
    sha256, name = checksum_line.decode().split()
    return InstallResult(name.lstrip("/"), sha256, rest[: int(length_line)])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- install trees ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeTree:
    """A directory laid out as both a Fedora-style and a Debian-style install tree."""

    root: Path
    kernel: Path
    initrd: Path


def lay_out_tree(root: Path, writes: bool = True) -> FakeTree:
    """Put the fake installer where Fedora (``.treeinfo``, images/pxeboot) and Debian (netboot) URL installs look."""
    kernel = debian_kernel()
    image = initramfs(writes)
    for kernel_path, initrd_path in ((FEDORA_KERNEL, FEDORA_INITRD), (DEBIAN_KERNEL, DEBIAN_INITRD)):
        (root / kernel_path).parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(kernel.bootable, root / kernel_path)
        (root / initrd_path).write_bytes(image)
    (root / ".treeinfo").write_text(
        "[general]\nfamily = Fedora\nname = Fedora 38\nversion = 38\narch = x86_64\nplatforms = x86_64\n\n"
        "[tree]\narch = x86_64\nplatforms = x86_64\n\n"
        f"[images-x86_64]\nkernel = {FEDORA_KERNEL}\ninitrd = {FEDORA_INITRD}\n"
    )
    return FakeTree(root, root / FEDORA_KERNEL, root / FEDORA_INITRD)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (the uncompressed kernel is 66 MB), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class TreeServer:
    """Serves a directory over HTTP on 127.0.0.1 (a free port) from a thread; use as a context manager."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-tree-http", daemon=True)

    def __enter__(self) -> TreeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_tree(root: Path) -> TreeServer:
    """A TreeServer for ``root`` (start it with ``with``)."""
    return TreeServer(root)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log on the test's stderr."""


# --- ISOs ---------------------------------------------------------------------------------------------------------


def make_iso(path: Path | str, files: dict[str, bytes], rock_ridge: bool = True, joliet: bool = True) -> str:
    """An ISO holding ``files`` (path -> bytes), with Rock Ridge and Joliet names when asked."""
    import pycdlib  # a product dependency, but only ISO tests need it here

    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=4 if rock_ridge else 1,
        rock_ridge="1.09" if rock_ridge else None,
        joliet=3 if joliet else None,
    )
    made = set()
    for name, data in files.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                made.add(folder)
                iso.add_directory(
                    "/" + folder.upper(),
                    rr_name=parts[depth - 1] if rock_ridge else None,
                    joliet_path="/" + folder if joliet else None,
                )
        leaf = parts[-1].upper().replace("-", "_")
        iso_name = "/" + "/".join([*(p.upper() for p in parts[:-1]), leaf if "." in leaf else leaf + "."]) + ";1"
        if not rock_ridge:
            iso_name = iso_name.replace(".TREEINFO", "TREEINFO")
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            iso_name,
            rr_name=parts[-1] if rock_ridge else None,
            joliet_path="/" + name if joliet else None,
        )
    iso.write(str(path))
    iso.close()
    return str(path)


def lay_out_iso(path: Path, writes: bool = True) -> Path:
    """An installer ISO laid out as Fedora's: ``.treeinfo`` and images/pxeboot/{vmlinuz,initrd.img}."""
    tree = Path(tempfile.mkdtemp(prefix="fake-iso-tree-"))
    try:
        laid = lay_out_tree(tree, writes)
        make_iso(
            path,
            {
                ".treeinfo": (tree / ".treeinfo").read_bytes(),
                FEDORA_KERNEL: laid.kernel.read_bytes(),
                FEDORA_INITRD: laid.initrd.read_bytes(),
            },
        )
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return path
