"""Targets: how a build's base image becomes one cloud's image format.

A target plug-in has a ``name`` and a ``build(job)`` method returning a
Deferred that fires with the path of the finished image.  It reports progress
through ``job.progress(percent)`` and never blocks the reactor.  Plug-ins are
found by entry point (group ``imgfac_twisted.targets``).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from ..model import Builder
from ..template import Template


class BuildJob(Protocol):
    """What a target plug-in is given for one build (the dispatcher implements it)."""

    builder: Builder
    template: Template
    #: A directory of this builder's own, in the state directory.
    work_dir: str
    #: The reactor (IReactorTime and friends), for timers and processes.
    reactor: Any

    def log(self, message: str) -> Deferred:
        """Add a line to the builder's log (shown at ``/imagefactory/builders/<id>/log``)."""

    def progress(self, percent: int) -> Deferred:
        """Record how far the build got (0..100)."""


class Target(Protocol):
    """What the dispatcher needs of a target plug-in."""

    name: str

    def build(self, job: BuildJob) -> Deferred:
        """Make the target image; fire with its path."""
