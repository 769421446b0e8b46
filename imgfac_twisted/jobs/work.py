"""What the dispatcher hands a plug-in for one builder's work: one job type per plug-in protocol.

- :class:`TargetBuildJob` is the :class:`~imgfac_twisted.targets.BuildJob`
  a target plug-in builds from;
- :class:`ProviderPushJob` is the :class:`~imgfac_twisted.providers.PushJob`
  a provider plug-in pushes from.

(The OS plug-ins' :class:`~imgfac_twisted.os.InstallJob` is made by
``base_images``: one install serves every target of a build.)  Also here:
the blocking file helpers the jobs run on the disk door.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.logger import Logger

from ..doors import IDoor
from ..imagestore import IImageStore, ImageStoreError
from ..model import Builder, Image, StageName
from ..providers import PushJob
from ..targets import Artifact, BuildJob
from ..template import Template
from .base_images import BaseImages, Follower
from .logs import IBuilderLogs

T = TypeVar("T")


def _nothing(_: object) -> None:
    """Drop a result nobody reads."""


@dataclass(frozen=True)
class _BuilderWork:
    """What every job has: its builder, a folder of its own, the reactor, its log and progress."""

    builder: Builder
    #: A directory of this builder's own, in the state directory.
    work_dir: str
    reactor: Any
    logs: IBuilderLogs
    #: Records the builder's progress (0..100) in its current status; fires with the moved Builder.
    report: Callable[[int], Deferred[Builder]]

    def progress(self, percent: int) -> Deferred[None]:
        """Record how far the work got (0..100)."""
        return self.report(percent).addCallback(_nothing)

    def log(self, message: str) -> Deferred[None]:
        """Add a line to the builder's log."""
        return self.logs.append(self.builder.id, message)


@dataclass(frozen=True)
class TargetBuildJob(_BuilderWork):
    """A target builder's work: the build's template, its base image, and the disk door."""

    template: Template
    base_images: BaseImages
    disk_door: IDoor
    #: Records the stage the builder entered.
    enter_stage: Callable[[StageName], Deferred[Builder]]

    def base_image(self) -> Deferred[str]:
        """Fire with the path of the build's raw base image; its install moves progress 0 to 50.

        The builder follows the install's stages, then enters ``converting``.
        """
        waiting = self.base_images.wait_for(
            self.builder.build_id, self.template, self.builder.id, follower(self.report, self.enter_stage)
        )
        return waiting.addCallback(lambda path: self.enter_stage(StageName.CONVERTING).addCallback(lambda _: path))

    def artifact(self, path: str) -> Deferred[Artifact]:
        """Fire with the Artifact of ``path`` (hashed on the disk door, off the reactor)."""
        return self.disk_door.run(file_artifact, path)

    def discard(self, path: str) -> Deferred[None]:
        """Remove a file or folder (if there) on the disk door, off the reactor."""
        return self.disk_door.run(discard_path, path)

    def on_disk(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run blocking file work ``fn(*args)`` on the disk door, off the reactor."""
        return self.disk_door.run(fn, *args)


@dataclass(frozen=True)
class ProviderPushJob(_BuilderWork):
    """A push builder's work: the target image pushed, and the image it was built for."""

    #: The pushed target image's builder (COMPLETED, with its artifact path).
    target_builder: Builder
    #: The image the target image was built for (its os_arch, name, ...).
    image: Image
    #: Where the target image is kept (its builder's ``artifact_path`` is a location there).
    image_store: IImageStore
    #: Where fetched copies are removed, off the reactor.
    disk_door: IDoor
    #: Files fetched for this push (removed after it by ``discard_image_file``).
    _fetched: list[str] = field(default_factory=list)

    def image_file(self) -> Deferred[str]:
        """Fire with the path of a local file holding the target image: the store's own file, or a copy
        fetched into ``work_dir`` (S3), checked against the target's SHA-256."""
        location = self.target_builder.artifact_path
        if not location:
            return fail(ImageStoreError(f"target image {self.target_builder.id} has no image file to push"))

        def fetched(path: str) -> str:
            if path != self.image_store.local_path(location):
                self._fetched.append(path)
            return path

        return self.image_store.fetch(location, self.work_dir, self.target_builder.artifact_sha256).addCallback(fetched)

    def discard_image_file(self) -> Deferred[None]:
        """Remove what ``image_file`` fetched (nothing when it read the store's own file)."""
        fetched, self._fetched[:] = list(self._fetched), []
        return DeferredList([self.disk_door.run(discard_path, path) for path in fetched]).addCallback(_nothing)


def _conforms(build: TargetBuildJob, push: ProviderPushJob) -> tuple[BuildJob, PushJob]:
    """Never called: makes the type checker prove each job satisfies its plug-in protocol."""
    return build, push


def file_artifact(path: str) -> Artifact:
    """Size and SHA-256 of a file, read in 1 MiB pieces (blocking: run it on a door)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return Artifact(path=path, size=size, sha256=digest.hexdigest())


def discard_path(path: str) -> None:
    """Remove ``path``, a file or a folder, if it is there (blocking: run it on a door)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def install_progress(report: Callable[[int], Deferred[Builder]]) -> Callable[[int], None]:
    """A base image install's progress (0..100) reported as the first half (0..50) of a target builder's."""

    def reported(percent: int) -> None:
        report(percent // 2).addErrback(
            lambda failure: Logger().failure("progress of a base image install not recorded", failure)
        )

    return reported


def follower(
    report: Callable[[int], Deferred[Builder]], enter_stage: Callable[[StageName], Deferred[Builder]]
) -> Follower:
    """How a target builder follows its build's install: its progress (0..50) and its stages."""

    def entered(stage: StageName) -> None:
        enter_stage(stage).addErrback(
            lambda failure: Logger().failure("stage of a base image install not recorded", failure)
        )

    return Follower(progress=install_progress(report), stage=entered)
