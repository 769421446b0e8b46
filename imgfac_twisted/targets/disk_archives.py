"""Disk image targets that are archives: OVA (OVF descriptor and vmdk in a tar) and GCE (a gzipped tar).

Each converts (or links) the base image like any ``disk_image`` target, then
packs it with ``tar`` (``pack``: progress up to 100, then the archive's
listing checked against the members asked for).
"""

from __future__ import annotations

import os

from . import Artifact, BuildJob
from .archives import Member, Tar, check_members, ova_format
from .disk_image import CONVERT_START, DONE, DiskImageTarget, ProgressBand, os_description, safe_name
from .ovf import descriptor
from .qemu import QemuImg, Runner

#: The one member a GCE image archive may hold.
GCE_MEMBER = "disk.raw"
#: Where a GCE build's progress stands once the disk was copied (when it cannot be linked).
GCE_COPIED = 60
#: Where an OVA build's progress stands once the vmdk is made (packing is a mere copy).
OVA_CONVERTED = 90


class OvaTarget(DiskImageTarget):
    """An OVA: a tar whose first member is the OVF descriptor, then the streamOptimized vmdk."""

    extension = "ova"

    async def make(self, job: BuildJob, qemu: QemuImg, base: str, size: int, stage: str) -> Artifact:
        stem = safe_name(job.template.name)
        disk_name, ovf_name = f"{stem}-disk1.{self.disk.extension}", f"{stem}.ovf"
        disk = os.path.join(stage, disk_name)
        # The vmdk's compression is most of the work; packing is a copy.
        await qemu.convert(
            base,
            "raw",
            disk,
            self.disk.format,
            self.disk.options,
            size=size,
            on_progress=ProgressBand(job, CONVERT_START, OVA_CONVERTED),
        )
        await qemu.check(disk, self.disk.format, size, self.disk.expected)
        disk_size = os.path.getsize(disk)
        ovf = descriptor(stem, os_description(job.template), disk_name, disk_size, size)
        # A few kilobytes: writing them here does not hold the reactor up.
        with open(os.path.join(stage, ovf_name), "wb") as stream:
            stream.write(ovf)
        archive = self.image_path(job, stage)
        members = [Member(ovf_name, len(ovf)), Member(disk_name, disk_size)]
        await pack(job, self._run, archive, stage, members, tar_format=ova_format(disk_size), low=OVA_CONVERTED)
        return await job.artifact(archive)


class GceTarget(DiskImageTarget):
    """A GCE image: a gzipped GNU tar holding one sparse member, ``disk.raw``, the raw disk."""

    extension = "tar.gz"

    async def make(self, job: BuildJob, qemu: QemuImg, base: str, size: int, stage: str) -> Artifact:
        disk = os.path.join(stage, GCE_MEMBER)
        low = await self.stage_disk(job, qemu, base, disk, size)
        await qemu.check(disk, "raw", size)
        archive = self.image_path(job, stage)
        # tar -S reads only the allocated parts: that is what its progress counts.
        allocated = os.stat(disk).st_blocks * 512
        await pack(
            job,
            self._run,
            archive,
            stage,
            [Member(GCE_MEMBER, size)],
            tar_format="oldgnu",
            low=low,
            expected_bytes=allocated,
            gzip=True,
            sparse=True,
        )
        return await job.artifact(archive)

    async def stage_disk(self, job: BuildJob, qemu: QemuImg, base: str, disk: str, size: int) -> int:
        """Put the base image at ``disk``: a hard link when it can (no copy), else a sparse copy.

        Returns where the builder's progress stands afterwards.
        """
        try:
            os.link(base, disk)
        except OSError as error:
            await job.log(f"cannot link the base image ({error.strerror}): copying it")
            await qemu.convert(
                base, "raw", disk, "raw", {}, size=size, on_progress=ProgressBand(job, CONVERT_START, GCE_COPIED)
            )
            return GCE_COPIED
        await job.log(f"{GCE_MEMBER} is the base image, hard-linked (tar only reads it)")
        return CONVERT_START


async def pack(
    job: BuildJob,
    run: Runner,
    archive: str,
    directory: str,
    members: list[Member],
    *,
    tar_format: str,
    low: int,
    expected_bytes: int | None = None,
    gzip: bool = False,
    sparse: bool = False,
) -> None:
    """Pack ``members`` into ``archive`` (progress ``low`` -> 100), then check the archive's listing.

    ``expected_bytes`` is what tar will write (by default the members' sizes), for its progress.
    """
    tar = Tar(job.reactor, job.log, run)
    if expected_bytes is None:
        expected_bytes = sum(member.size for member in members)
    await tar.create(
        archive,
        directory,
        [member.name for member in members],
        tar_format=tar_format,
        expected_bytes=expected_bytes,
        on_progress=ProgressBand(job, low, DONE),
        gzip=gzip,
        sparse=sparse,
    )
    listed = await tar.members(archive, gzip=gzip, size_hint=expected_bytes)
    check_members(os.path.basename(archive), listed, members)
    await job.log(
        f"checked {os.path.basename(archive)} ({tar_format} tar{', gzip' if gzip else ''}): "
        + ", then ".join(f"{member.name} ({member.size} bytes)" for member in listed)
    )
