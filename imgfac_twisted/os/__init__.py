"""Operating systems: how a template's OS is installed into a raw base image.

An OS plug-in says which templates it ``handles`` and ``install``s one into
a raw disk image, reporting progress (0..100) and log lines through the job
it is given.  One build makes one base image, shared by all its targets.
Plug-ins are found by entry point (group ``imgfac_twisted.os``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from twisted.internet.defer import Deferred

from ..model import StageName
from ..template import Template


class Package(NamedTuple):
    """One package installed in a base image, as its package manager names it."""

    name: str
    #: The full version, epoch included (``1:9.2p1-2+deb12u3``).
    version: str
    arch: str


class InstallJob(Protocol):
    """What an OS plug-in is given to install one build's base image (``jobs.base_images`` makes it)."""

    @property
    def template(self) -> Template:
        """The build's template."""

    @property
    def build_id(self) -> str:
        """The build's id; its work dir is ``state_dir/builds/<build id>``."""

    @property
    def image_path(self) -> str:
        """Where to write the image: a raw disk file that does not exist yet."""

    @property
    def work_dir(self) -> str:
        """A directory of the build's own, for scratch files."""

    @property
    def reactor(self) -> Any:
        """The reactor, for timers and processes."""

    def progress(self, percent: int) -> None:
        """Record how far the install got (0..100)."""

    def log(self, message: str) -> None:
        """Add a line to the log of every builder waiting for this base image."""

    def stage(self, name: StageName) -> None:
        """Say which stage the install is in (``downloading``, ``installing``)."""

    def record_manifest(self, packages: list[Package]) -> None:
        """Hand over the installed system's package list; an install that gives none fails."""


class OperatingSystem(Protocol):
    """What the dispatcher needs of an OS plug-in."""

    name: str
    #: Whether its images are boot-tested (a real OS is; the Mock OS's disk has no OS to boot).
    boot_tested: bool

    def handles(self, template: Template) -> bool:
        """True when this plug-in installs the template's OS (name, version, arch)."""

    def install(self, job: InstallJob) -> Deferred[None]:
        """Write the raw base image at ``job.image_path``; fire once it is complete."""
