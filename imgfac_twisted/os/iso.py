"""ISO installs: finding the ISO a template names and taking the installer out of it.

``<iso>`` is either an http(s) URL, downloaded and cached like tree files, or
``file:NAME`` (``file:///path`` too) naming an ISO inside the folder set by the
``install_iso_dir`` option; without that option local ISOs are refused, so a
template cannot make the daemon attach an arbitrary file of its host to a VM.
The kernel and initrd are read with pycdlib (pure Python, blocking: call the
functions here on a door thread), from the paths the ISO's ``.treeinfo``
names or the family's standard ones.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ImageFactoryError, InvalidTemplate
from .trees import TREEINFO, BootFiles, from_treeinfo

#: Largest .treeinfo read from an ISO.
MAX_TREEINFO_BYTES = 1024 * 1024
HASH_CHUNK = 1024 * 1024


def is_local(location: str) -> bool:
    """Whether the ISO location is a ``file:`` one."""
    return location.strip().lower().startswith("file:")


def local_iso_path(location: str, iso_dir: str | None) -> str:
    """The real path of a ``file:`` ISO, which must be a file inside ``iso_dir``."""
    if not iso_dir:
        raise InvalidTemplate(
            "template is invalid: local ISOs (file:) are not allowed on this daemon "
            "(the install_iso_dir option is not set); give an http(s) URL"
        )
    name = unquote(urlsplit(location.strip()).path)
    root = os.path.realpath(iso_dir)
    # os.path.join keeps an absolute name as it is; the check below then applies.
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise InvalidTemplate(f"template is invalid: the ISO {location!r} is not a file in {iso_dir}")
    return path


def file_checksum(path: str, algorithm: str) -> str:
    """The hex digest of a file (blocking)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _iso9660_name(path: str) -> str:
    """The plain ISO 9660 name of ``path``: upper case with a version (``/A/VMLINUZ.;1``)."""
    *folders, name = path.upper().split("/")
    name = name if "." in name else name + "."
    return "/" + "/".join([*folders, name + ";1"])


def _read(iso: Any, path: str, sink: Any) -> bool:
    """Copy the ISO's ``path`` into ``sink``; False when the ISO has no such file."""
    attempts = []
    if iso.has_rock_ridge():
        attempts.append({"rr_path": "/" + path})
    if iso.has_joliet():
        attempts.append({"joliet_path": "/" + path})
    if iso.has_udf():
        attempts.append({"udf_path": "/" + path})
    attempts.append({"iso_path": _iso9660_name(path)})
    from pycdlib.pycdlibexception import PyCdlibException

    for where in attempts:
        try:
            iso.get_file_from_iso_fp(sink, **where)
            return True
        except PyCdlibException:
            sink.seek(0)
            sink.truncate()
    return False


def _treeinfo_boot_files(iso: Any, arch: str) -> BootFiles | None:
    buffer = io.BytesIO()
    if not _read(iso, TREEINFO, buffer) or buffer.tell() > MAX_TREEINFO_BYTES:
        return None
    return from_treeinfo(buffer.getvalue().decode("utf-8", errors="replace"), arch)


def _extract(iso: Any, path: str, destination: str) -> bool:
    partial = destination + ".partial"
    with open(partial, "wb") as sink:
        found = _read(iso, path, sink)
    if found:
        os.replace(partial, destination)
    else:
        os.remove(partial)
    return found


def extract_boot_files(iso_path: str, candidates: list[BootFiles], arch: str, destination_dir: str) -> tuple[str, str]:
    """Copy the installer kernel and initrd out of the ISO; return their paths (blocking)."""
    # Imported here: only ISO installs need pycdlib.
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open(iso_path)
    except (PyCdlibException, OSError) as error:
        raise ImageFactoryError(f"{os.path.basename(iso_path)} cannot be read as an ISO: {error}") from None
    try:
        named = _treeinfo_boot_files(iso, arch)
        options = [named] if named else candidates
        kernel = os.path.join(destination_dir, "vmlinuz")
        initrd = os.path.join(destination_dir, "initrd.orig")
        for boot in options:
            if _extract(iso, boot.kernel, kernel) and _extract(iso, boot.initrd, initrd):
                return kernel, initrd
        tried = ", ".join(f"{b.kernel} + {b.initrd}" for b in options)
        raise ImageFactoryError(
            f"no installer kernel and initrd in the ISO {os.path.basename(iso_path)} (looked for {tried})"
        )
    finally:
        iso.close()
