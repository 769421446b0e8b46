"""The ``Mock`` operating system: a tiny real disk, made in a moment, without a VM.

The "install" writes a raw disk of the template's size (sparse) with an MBR
partition table and one ext2 partition holding a file named after the
template.  It is deterministic: the same template gives the same bytes
(fixed file system UUID, hash seed and time), so tests can check images.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import uuid

from twisted.internet.defer import Deferred, ensureDeferred

from ..model import StageName
from ..processes import run_process
from ..registry import PluginEnvironment
from ..template import Template
from . import InstallJob

SECTOR = 512
#: The partition starts at 1 MiB, as partitioning tools align it.
PARTITION_START = 2048 * SECTOR
MKE2FS_TIMEOUT = 120.0


def mbr(disk_bytes: int) -> bytes:
    """A master boot record with one Linux partition from 1 MiB to the end of the disk."""
    sectors = disk_bytes // SECTOR - PARTITION_START // SECTOR
    # status, CHS first (unused: 0xfe 0xff 0xff), type 0x83, CHS last, LBA first, sector count
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", PARTITION_START // SECTOR, sectors)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


def file_name(template_name: str) -> str:
    """The template's name made safe as a file name (no path, no hidden file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", template_name).lstrip(".")
    return safe[:200] or "template"


def file_system_uuid(template: Template) -> str:
    """A UUID derived from the template, so the same template makes the same disk."""
    return str(uuid.UUID(bytes=hashlib.sha256(template.xml.encode("utf-8")).digest()[:16]))


class MockOS:
    """Installs templates whose OS is named ``Mock`` (any version and arch)."""

    name = "Mock"
    #: Its disk holds a file system but no OS: nothing to boot.
    boot_tested = False

    def __init__(self, environment: PluginEnvironment) -> None:
        self._timeout = MKE2FS_TIMEOUT

    def handles(self, template: Template) -> bool:
        """Only ``<os><name>Mock</name>``, in any letter case."""
        return template.os_name.lower() == "mock"

    def install(self, job: InstallJob) -> Deferred[None]:
        """Write the mock disk at ``job.image_path``."""
        return ensureDeferred(self._install(job))

    async def _install(self, job: InstallJob) -> None:
        template = job.template
        size = template.disk_size_bytes
        job.stage(StageName.INSTALLING)
        stage = os.path.join(job.work_dir, "mock-root")
        os.makedirs(stage, exist_ok=True)
        content = os.path.join(stage, file_name(template.name))
        with open(content, "w", encoding="utf-8") as stream:
            stream.write(f"{template.name}: {template.description or ''}\n")
        for path in (content, stage):
            os.utime(path, (0, 0))
        job.log(f"mock install: a disk of {size} bytes with an ext2 partition holding {template.name!r}")
        # A sparse file and 512 bytes of partition table: quick enough to do here.
        with open(job.image_path, "wb") as disk:
            disk.truncate(size)
            disk.write(mbr(size))
        job.progress(30)
        fs_uuid = file_system_uuid(template)
        await run_process(
            job.reactor,
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext2",
                "-d",
                stage,
                "-U",
                fs_uuid,
                "-L",
                "mock",
                "-E",
                f"offset={PARTITION_START},hash_seed={fs_uuid}",
                job.image_path,
                f"{(size - PARTITION_START) // 1024}k",
            ],
            timeout=self._timeout,
            env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"},
        )
        # No package manager, no packages.
        job.record_manifest([])
        job.progress(100)
