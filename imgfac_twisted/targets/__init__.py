"""Targets: how a build's base image becomes one cloud's image format.

A target plug-in has a ``name`` and a ``build(job)`` method returning a
Deferred that fires with the finished image's Artifact.  It gets the build's
raw base image from ``job.base_image()`` (whose install moves the builder's
progress from 0 to 50), reports its own progress from 50 to 100 through
``job.progress(percent)``, and never blocks the reactor.  Plug-ins are found
by entry point (group ``imgfac_twisted.targets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

from ..model import Builder
from ..template import Template

T = TypeVar("T")


@dataclass(frozen=True)
class Artifact:
    """A finished target image: where it lies, its size in bytes and its SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


class BuildJob(Protocol):
    """What a target plug-in is given for one build (``jobs.work.TargetBuildJob`` implements it)."""

    @property
    def builder(self) -> Builder:
        """The target image's builder."""

    @property
    def template(self) -> Template:
        """The build's template."""

    @property
    def work_dir(self) -> str:
        """A directory of this builder's own, in the state directory."""

    @property
    def reactor(self) -> Any:
        """The reactor (IReactorTime and friends), for timers and processes."""

    def base_image(self) -> Deferred[str]:
        """Fire with the path of the build's raw base image (installing it if need be)."""

    def artifact(self, path: str) -> Deferred[Artifact]:
        """Fire with the Artifact of a finished file (size and SHA-256, read off the reactor)."""

    def discard(self, path: str) -> Deferred[None]:
        """Remove a file or folder (if there) off the reactor; fire once it is gone."""

    def on_disk(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run blocking file work ``fn(*args)`` on the disk door; fire with its result."""

    def log(self, message: str) -> Deferred[None]:
        """Add a line to the builder's log (shown at ``/imagefactory/builders/<id>/log``)."""

    def progress(self, percent: int) -> Deferred[None]:
        """Record how far the build got (0..100)."""


class Target(Protocol):
    """What the dispatcher needs of a target plug-in."""

    name: str
    #: Whether the image is made from the build's base image.  Builders of such targets
    #: stay PENDING until the build's install holds a local session.
    uses_base_image: bool

    def build(self, job: BuildJob) -> Deferred[Artifact]:
        """Make the target image; fire with its Artifact."""
