"""Fakes for testing OS plug-ins: an HTTP install tree, the virt layer, an install job."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..model import StageName
from ..template import Template
from . import Package
from .initrd import newc_archive


class TreeResource(Resource):
    """Serves ``files`` (path -> bytes) like an install tree, and remembers every path asked for.

    A path in ``unsized`` is sent without Content-Length; a path in ``stalled``
    never finishes (headers and a first chunk only).
    """

    isLeaf = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.files = dict(files)
        self.requested: list[str] = []
        self.unsized: set[str] = set()
        self.stalled: set[str] = set()

    def render_GET(self, request: Any) -> Any:
        path = request.path.decode("utf-8").lstrip("/")
        self.requested.append(path)
        if path not in self.files:
            request.setResponseCode(404)
            return b"not found"
        data = self.files[path]
        if path in self.stalled:
            request.write(data[:1])
            return NOT_DONE_YET
        if path not in self.unsized:
            request.setHeader(b"content-length", str(len(data)).encode())
        request.write(data)
        request.finish()
        return NOT_DONE_YET


@dataclass(frozen=True)
class FakeInstallSpec:
    """The fields of virt.install.InstallSpec."""

    name: str
    disk_path: str
    kernel_path: str
    initrd_path: str
    cmdline: str
    console_log: str
    iso_path: str | None = None
    memory_mib: int = 2048
    vcpus: int = 1


#: What an answer file's last step prints on the console (see os/manifest.py).
FAKE_MANIFEST = [
    "IMGFAC-MANIFEST-BEGIN",
    "IMGFAC-PKG bash 5.2.15-2+b7 amd64",
    "IMGFAC-PKG openssh-server 1:9.2p1-2+deb12u3 amd64",
    "IMGFAC-MANIFEST-END",
]


class FakeVirt:
    """Stands in for the ``imgfac_twisted.virt.install`` module: records run_install calls.

    Each call gets a Deferred the test fires (``finish``) or that is cancelled.
    """

    InstallSpec = FakeInstallSpec
    DOMAIN_PREFIX = "imgfac-"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.cancelled = 0

    def run_install(self, connection: Any, spec: FakeInstallSpec, **kwargs: Any) -> Deferred[None]:
        def cancel(_: Deferred[None]) -> None:
            self.cancelled += 1

        running: Deferred[None] = Deferred(cancel)
        self.calls.append({"connection": connection, "spec": spec, "deferred": running, **kwargs})
        return running

    def finish(self, progress: int = 100, manifest: list[str] | None = FAKE_MANIFEST) -> None:
        """Report progress, print the package manifest (unless None), then power the guest off
        (the last install succeeds)."""
        call = self.calls[-1]
        call["progress"](progress)
        for line in manifest or []:
            call["log"](line)
        call["log"]("reboot: Power down")
        call["deferred"].callback(None)


@dataclass
class FakeJob:
    """An InstallJob recording progress and log lines."""

    template: Template
    build_id: str
    image_path: str
    work_dir: str
    reactor: Any
    progress_seen: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    stages: list[StageName] = field(default_factory=list)
    manifest: list[Package] | None = None

    def progress(self, percent: int) -> None:
        self.progress_seen.append(percent)

    def stage(self, name: StageName) -> None:
        self.stages.append(name)

    def record_manifest(self, packages: list[Package]) -> None:
        self.manifest = list(packages)

    def log(self, message: str) -> None:
        self.lines.append(message)


def read_newc(archive: bytes) -> list[tuple[str, int, bytes]]:
    """The members (name, mode, data) of an uncompressed newc cpio archive, trailer included."""
    members, offset = [], 0
    while offset < len(archive):
        header = archive[offset : offset + 110]
        if header[:6] != b"070701":
            raise ValueError(f"bad newc magic at {offset}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_end = offset + 110 + name_size
        name = archive[offset + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        data = archive[data_start : data_start + size]
        members.append((name, mode, data))
        offset = data_start + size + (-(data_start + size) % 4)
        if name == "TRAILER!!!":
            break
    return members


def appended_members(initrd: bytes, original_length: int) -> list[tuple[str, int, bytes]]:
    """The newc members of the gzip archive appended after ``original_length`` bytes (and zero padding)."""
    rest = initrd[original_length:].lstrip(b"\0")
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    archive = decompressor.decompress(rest)
    if decompressor.unused_data:
        raise ValueError("bytes after the appended archive")
    return read_newc(archive)


def gzip_newc(members: dict[str, bytes]) -> bytes:
    """A gzip newc archive, as a stand-in initrd."""
    return gzip.compress(newc_archive(members), mtime=0)
