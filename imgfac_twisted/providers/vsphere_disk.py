"""What a vSphere push uploads: the OVF descriptor and where the streamOptimized vmdk lies (blocking reads).

- a ``vsphere`` target image is the vmdk itself: the descriptor is made as
  the ``ova`` target makes it (``targets.ovf``), with the disk's capacity
  read from the vmdk's sparse extent header;
- an ``ova`` target image is a tar: its descriptor is the factory's own
  (the ``.ovf`` member) and the disk is the member the descriptor names,
  read in place (its offset in the tar), never extracted.
"""

from __future__ import annotations

import os
import struct
import tarfile
from dataclasses import dataclass

from lxml import etree

from ..errors import ImageFactoryError
from ..model import Image
from ..targets.ovf import OVF_NS, descriptor

#: The targets whose images this provider takes.
TARGETS = ("vsphere", "ova")
#: A sparse extent header starts with this magic; the capacity (in 512-byte sectors) is at byte 12.
VMDK_MAGIC = b"KDMV"
SECTOR = 512
#: A descriptor larger than this is not the factory's.
MAX_DESCRIPTOR_BYTES = 1024 * 1024


class DiskError(ImageFactoryError):
    """The target image is not what a vSphere import needs (the message says what is wrong)."""


@dataclass(frozen=True)
class DiskSource:
    """The descriptor, and the disk's bytes: ``size`` bytes of ``path`` from ``offset``, named ``file_name``."""

    descriptor: str
    path: str
    offset: int
    size: int
    file_name: str


def disk_source(path: str, target: str, vm_name: str, image: Image) -> DiskSource:
    """The DiskSource of a ``vsphere`` vmdk or an ``ova`` (blocking; DiskError when it is neither)."""
    if target == "ova":
        return _from_ova(path)
    if target == "vsphere":
        return _from_vmdk(path, vm_name, image)
    raise DiskError(f"the vsphere providers take {', '.join(TARGETS)} images, not {target!r} ones")


def _from_vmdk(path: str, vm_name: str, image: Image) -> DiskSource:
    size = os.path.getsize(path)
    with open(path, "rb") as stream:
        header = stream.read(SECTOR)
    if len(header) < 20 or header[:4] != VMDK_MAGIC:
        raise DiskError(f"{os.path.basename(path)} is not a streamOptimized vmdk (no sparse extent header)")
    capacity = struct.unpack_from("<Q", header, 12)[0] * SECTOR
    file_name = f"{vm_name}-disk1.vmdk"
    about = " ".join(part for part in (image.os_name, image.os_version, image.os_arch) if part) or "unknown"
    text = descriptor(vm_name, about, file_name, size, capacity).decode("utf-8")
    return DiskSource(descriptor=text, path=path, offset=0, size=size, file_name=file_name)


def _from_ova(path: str) -> DiskSource:
    try:
        with tarfile.open(path, "r:") as archive:
            members = archive.getmembers()
            ovfs = [member for member in members if member.isfile() and member.name.endswith(".ovf")]
            if len(ovfs) != 1:
                raise DiskError(f"{os.path.basename(path)} holds {len(ovfs)} .ovf descriptors, not one")
            if ovfs[0].size > MAX_DESCRIPTOR_BYTES:
                raise DiskError(f"the descriptor of {os.path.basename(path)} is larger than {MAX_DESCRIPTOR_BYTES}")
            raw = archive.extractfile(ovfs[0])
            assert raw is not None  # a regular member
            text = raw.read().decode("utf-8")
    except (tarfile.TarError, UnicodeDecodeError) as error:
        raise DiskError(f"{os.path.basename(path)} is not a readable OVA: {error}") from None
    file_name = _disk_file(text, os.path.basename(path))
    disk = next((member for member in members if member.isfile() and member.name == file_name), None)
    if disk is None:
        raise DiskError(f"{os.path.basename(path)} lacks {file_name!r}, the disk its descriptor names")
    return DiskSource(descriptor=text, path=path, offset=disk.offset_data, size=disk.size, file_name=file_name)


def _disk_file(text: str, archive: str) -> str:
    """The one file the descriptor references (the factory's OVAs have one disk)."""
    try:
        root = etree.fromstring(text.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as error:
        raise DiskError(f"the descriptor of {archive} is not XML: {error}") from None
    files = root.findall(f"{{{OVF_NS}}}References/{{{OVF_NS}}}File")
    if len(files) != 1:
        raise DiskError(f"the descriptor of {archive} references {len(files)} files; one disk is expected")
    return str(files[0].get(f"{{{OVF_NS}}}href") or "")


def network_names(text: str) -> list[str]:
    """The networks a descriptor's NetworkSection names (the factory's descriptors name none)."""
    root = etree.fromstring(text.encode("utf-8"), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    return [
        str(network.get(f"{{{OVF_NS}}}name"))
        for network in root.findall(f"{{{OVF_NS}}}NetworkSection/{{{OVF_NS}}}Network")
    ]
