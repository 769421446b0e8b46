"""Disk image targets: the steps every target shares, and the formats that are one image file.

Every target follows the same steps (``DiskImageTarget._build``):

1. wait for the build's base image (its install moves progress 0 -> 50) and
   read its virtual size with ``qemu-img info``;
2. make the image in a staging directory of the builder's own, with
   ``qemu-img convert -p`` (progress 50 -> 100) and, for archives, ``tar``;
3. check it with ``qemu-img info --output=json`` (format, virtual size,
   format-specific data) and, for archives, the archive's listing;
4. hash it (off the reactor), then rename it into the builder's directory.

The ``ec2`` target is the raw base image itself: a sparse copy hashed while
it is written (``RawCopyTarget``), no qemu-img conversion; ``hyperv`` is a
fixed VHD of a whole number of MiB (``FixedVhdTarget``).  The formats that
are archives (OVA, GCE) are in ``disk_archives``; the table of targets and
their entry points in ``disk_formats``.

Only a checked, hashed image ever carries its final name: a failed or
cancelled build removes the staging directory with whatever is in it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..deferreds import settle
from ..processes import run_process
from ..template import Template
from . import Artifact, BuildJob
from .qemu import MIB, ImageCheckFailed, QemuImg, Runner, describe
from .sparse import copy_hashed

T = TypeVar("T")

#: The base image's install reports 0..50; making the target image, 50..100.
CONVERT_START = 50
DONE = 100
#: Inside the builder's directory: where an image is made before it is checked.
STAGING_DIR = "staging"
#: A fixed VHD is its data followed by a 512-byte footer.
VHD_FOOTER = 512


@dataclass(frozen=True)
class DiskFormat:
    """How qemu-img writes a disk format and what ``qemu-img info`` must then show."""

    format: str
    extension: str
    options: Mapping[str, str] = field(default_factory=dict)
    #: Format-specific data the image must show (``qemu-img info``'s ``format-specific.data``).
    expected: Mapping[str, str] = field(default_factory=dict)


RAW = DiskFormat("raw", "raw")
QCOW2 = DiskFormat("qcow2", "qcow2")
#: RHEV-M (oVirt 3.x) reads only the original qcow2 version.
QCOW2_COMPAT_010 = DiskFormat("qcow2", "qcow2", {"compat": "0.10"}, {"compat": "0.10"})
#: The vmdk vSphere imports: compressed, readable front to back.
VMDK_STREAM = DiskFormat("vmdk", "vmdk", {"subformat": "streamOptimized"}, {"create-type": "streamOptimized"})
#: A fixed VHD with exactly the size asked (no CHS rounding), as Azure and Hyper-V want.
VHD_FIXED = DiskFormat("vpc", "vhd", {"subformat": "fixed", "force_size": "on"})


# -- helpers ---------------------------------------------------------------


def safe_name(name: str) -> str:
    """``name`` made safe as a file name: no path, no hidden file, no odd characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100] or "image"


def os_description(template: Template) -> str:
    """The template's operating system in a few words (for the OVF descriptor)."""
    return f"{template.os_name} {template.os_version} {template.os_arch}"


def round_up(size: int, unit: int) -> int:
    """``size`` rounded up to a multiple of ``unit``."""
    return -(-size // unit) * unit


@asynccontextmanager
async def staging(job: BuildJob) -> AsyncIterator[str]:
    """A fresh staging directory in the job's folder, removed afterwards with whatever is left in it.

    Removing gigabytes of image is disk work: it goes through the job's
    door, off the reactor.  A cancelled tool may still be writing when this
    ends: unlinking its file is fine on Linux, the space comes back when the
    tool is gone.
    """
    path = os.path.join(job.work_dir, STAGING_DIR)
    await job.discard(path)
    os.makedirs(path)
    try:
        yield path
    finally:
        await job.discard(path)


def publish(artifact: Artifact, work_dir: str) -> Artifact:
    """Rename a checked image from the staging directory into ``work_dir`` (atomically)."""
    final = os.path.join(work_dir, os.path.basename(artifact.path))
    os.replace(artifact.path, final)
    return dataclasses.replace(artifact, path=final)


class ProgressBand:
    """Maps a tool's percentage into the builder's band ``low..high``, reporting each new whole percent once."""

    log = Logger()

    def __init__(self, job: BuildJob, low: int, high: int) -> None:
        self._job = job
        self._low = low
        self._high = high
        self._last = low

    def __call__(self, percent: float) -> None:
        value = self._low + int((self._high - self._low) * min(max(percent, 0.0), 100.0) / 100)
        if value <= self._last:
            return
        self._last = value
        # Moves of one builder are applied in order, so the COMPLETED move
        # that follows the last percentage cannot be overtaken by it.
        self._job.progress(value).addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.log.failure("progress of builder {builder_id} not recorded", failure, builder_id=self._job.builder.id)


# -- the targets -----------------------------------------------------------


class DiskImageTarget:
    """A target whose image is the base image converted by ``qemu-img convert`` into one DiskFormat."""

    uses_base_image = True

    def __init__(self, name: str, disk: DiskFormat, run: Runner = run_process) -> None:
        self.name = name
        self.disk = disk
        self._run = run

    @property
    def extension(self) -> str:
        """The file name extension of the finished image."""
        return self.disk.extension

    def build(self, job: BuildJob) -> Deferred[Artifact]:
        """Make, check and hash the target image; fire with its Artifact."""
        return ensureDeferred(self._build(job))

    async def _build(self, job: BuildJob) -> Artifact:
        base = await job.base_image()
        qemu = QemuImg(job.reactor, job.log, self._run)
        base_info = await qemu.info(base, "raw")
        await job.log(f"base image {os.path.basename(base)}: {describe(base_info)}")
        async with staging(job) as stage:
            artifact = publish(await self.make(job, qemu, base, base_info.virtual_size, stage), job.work_dir)
        await job.log(f"{os.path.basename(artifact.path)}: {artifact.size} bytes, sha256 {artifact.sha256}")
        return artifact

    def image_path(self, job: BuildJob, stage: str) -> str:
        """Where the image is made: named after the template and the target."""
        return os.path.join(stage, f"{safe_name(job.template.name)}-{self.name}.{self.extension}")

    async def make(self, job: BuildJob, qemu: QemuImg, base: str, size: int, stage: str) -> Artifact:
        """Convert ``base`` into ``stage``, check and hash the result: its Artifact."""
        image = self.image_path(job, stage)
        await qemu.convert(
            base,
            "raw",
            image,
            self.disk.format,
            self.disk.options,
            size=size,
            on_progress=ProgressBand(job, CONVERT_START, DONE),
        )
        await qemu.check(image, self.disk.format, size, self.disk.expected)
        return await job.artifact(image)


class RawCopyTarget(DiskImageTarget):
    """A raw disk (``ec2``): the base image copied sparsely on the disk door, hashed as it is written."""

    async def make(self, job: BuildJob, qemu: QemuImg, base: str, size: int, stage: str) -> Artifact:
        image = self.image_path(job, stage)
        band = ProgressBand(job, CONVERT_START, DONE)
        artifact = await stoppable_on_disk(job, copy_hashed, base, image, on_reactor(job.reactor, band))
        await qemu.check(image, self.disk.format, size, self.disk.expected)
        await job.log(f"{os.path.basename(image)}: a sparse copy of the base image, hashed while written")
        return artifact


def on_reactor(reactor: IReactorFromThreads, call: Callable[[float], None]) -> Callable[[float], None]:
    """``call``, made safe to call from a door's thread: it runs on the reactor."""
    return lambda value: reactor.callFromThread(call, value)


def stoppable_on_disk(job: BuildJob, fn: Callable[..., T], *args: Any) -> Deferred[T]:
    """Run ``fn(*args, stop)`` on the disk door; cancelling sets ``stop`` (a threading.Event).

    The thread cannot be interrupted: ``fn`` checks ``stop`` between pieces
    of work and ends soon after; the caller stops waiting at once.
    """
    stop = threading.Event()
    waiting: Deferred[T] = Deferred(lambda _: stop.set())
    job.on_disk(fn, *args, stop).addBoth(lambda result: settle(waiting, result))
    return waiting


class FixedVhdTarget(DiskImageTarget):
    """A fixed VHD whose virtual size is the base image's rounded up to a whole MiB (Azure refuses others).

    ``qemu-img convert`` always keeps the source's size, and qemu-img cannot
    resize a VHD: so the VHD is created empty at the rounded size first
    (reading as zeros), then the base image is converted into it (``-n``).
    """

    async def make(self, job: BuildJob, qemu: QemuImg, base: str, size: int, stage: str) -> Artifact:
        image = self.image_path(job, stage)
        rounded = round_up(size, MIB)
        if rounded != size:
            await job.log(f"the VHD's virtual size is rounded up from {size} to {rounded} bytes (a whole MiB)")
        await qemu.create(image, self.disk.format, self.disk.options, rounded)
        await qemu.convert(
            base,
            "raw",
            image,
            self.disk.format,
            {},
            size=rounded,
            on_progress=ProgressBand(job, CONVERT_START, DONE),
            existing_target=True,
        )
        await qemu.check(image, self.disk.format, rounded)
        check_fixed_vhd(image, rounded)
        await job.log(f"checked {os.path.basename(image)}: a fixed VHD (its data, then a {VHD_FOOTER}-byte footer)")
        return await job.artifact(image)


def check_fixed_vhd(path: str, size: int) -> None:
    """ImageCheckFailed unless the file is a fixed VHD's: its data, then one footer."""
    length = os.path.getsize(path)
    if length != size + VHD_FOOTER:
        raise ImageCheckFailed(
            f"{os.path.basename(path)} is {length} bytes: a fixed VHD of {size} bytes takes {size + VHD_FOOTER}"
        )
