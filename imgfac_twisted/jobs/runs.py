"""Running builders in the background: the dispatcher's engine room.

Each builder goes NEW -> PENDING (waiting for a build or push slot and, for
a target made from the base image, for the build's install) -> BUILDING or
PUSHING -> COMPLETED or FAILED, every move through the BuilderUpdater.  A
cancelled or stopped builder ends FAILED with the reason; once every target
of a build has ended, the build's base image and install files are removed.
The requests that start builders are the dispatcher's (``dispatcher``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore, ensureDeferred, succeed
from twisted.internet.defer import TimeoutError as WaitTimedOut
from twisted.logger import Logger

from ..deferreds import InFlight, observe
from ..doors import IDoor
from ..errors import ImageFactoryError, InvalidTransition
from ..imagestore import IMAGES_DIR, DirectoryImageStore, IImageStore, image_key, put_or_clean_up
from ..model import Build, Builder, Image, Operation, StageName, Status
from ..providers import Credentials, Provider
from ..targets import Target
from ..template import Template
from .base_images import BUILDS_DIR, BaseImages
from .index import BuilderIndex
from .logs import IBuilderLogs
from .updates import BuilderUpdater
from .work import ProviderPushJob, TargetBuildJob, discard_path, follower

__all__ = ["CANCEL_REASON", "RESTART_REASON", "STOP_REASON", "WIND_DOWN_TIMEOUT", "BuilderRuns"]

RESTART_REASON = "the daemon restarted while this builder was {status}; start the work again"
STOP_REASON = "the daemon stopped while this builder was running"
CANCEL_REASON = "cancelled by a client"
#: How long a cancelled builder waits for its abandoned install to clean up (destroy its VM) before ending.
WIND_DOWN_TIMEOUT = 60.0


@dataclass
class _Running:
    """A running builder's work, and why it was stopped (once it is)."""

    deferred: Deferred[None]
    stop_reason: list[str] = field(default_factory=list)
    #: False once abandoned: its end is not recorded here (another node records or resumes it).
    record_end: bool = True


class BuilderRuns:
    """The builders running in the background: their slots, their jobs, their cancellation and their end."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        updater: BuilderUpdater,
        index: BuilderIndex,
        targets: dict[str, Target],
        state_dir: str,
        logs: IBuilderLogs,
        base_images: BaseImages,
        disk_door: IDoor,
        build_slots: int,
        push_slots: int,
        image_store: IImageStore | None = None,
    ) -> None:
        self._reactor = reactor
        #: Where finished target images go (default: a directory in the state dir).
        self.image_store = image_store or DirectoryImageStore(os.path.join(state_dir, IMAGES_DIR), disk_door)
        self._updater = updater
        self._index = index
        self._targets = targets
        self._state_dir = state_dir
        self._logs = logs
        self._base_images = base_images
        self._disk_door = disk_door
        self._build_slots = DeferredSemaphore(build_slots)
        self._push_slots = DeferredSemaphore(push_slots)
        self._running: dict[str, _Running] = {}
        #: Every piece of work started in the background: stop_all waits for it.
        self._background = InFlight()

    # -- the dispatcher's questions and orders ---------------------------

    def start_builds(self, build: Build, builders: list[Builder], template: Template) -> None:
        """Run each of a build's new builders (a build slot each); clean the build's work files up after."""
        for builder in builders:
            self._launch(
                builder,
                self._build_slots,
                Status.BUILDING,
                self._build_work(builder, template),
                ready=self._install_slot(builder, template),
            )
        self._clean_up_after(build.id, [self._running[builder.id].deferred for builder in builders])

    def stopped(self, builder_id: str) -> Deferred[None]:
        """Fire (with None) once the builder's running work has ended; at once when it is not running."""
        running = self._running.get(builder_id)
        return succeed(None) if running is None else observe(running.deferred)

    def cancel(self, builder_id: str) -> bool:
        """Stop a running builder, which then ends FAILED; False when it is not running."""
        return self._stop(builder_id, CANCEL_REASON)

    def abandon(self, builder_id: str) -> bool:
        """Stop a running builder without recording its end: it ended elsewhere (cancelled on another
        node, taken over) or is handed back to the work queue.  False when it is not running."""
        running = self._running.get(builder_id)
        if running is None:
            return False
        running.record_end = False
        running.deferred.cancel()
        return True

    def running_ids(self) -> list[str]:
        """The ids of the builders running here."""
        return list(self._running)

    def is_running(self, builder_id: str) -> bool:
        """Whether the builder runs here."""
        return builder_id in self._running

    def queue_lengths(self) -> dict[str, int]:
        """How many builds and pushes wait for a slot."""
        return {"build": len(self._build_slots.waiting), "push": len(self._push_slots.waiting)}

    def recover(self) -> None:
        """Fail the builders a previous run of the daemon left unfinished."""
        for builder in self._index.unfinished():
            if not builder.status.is_final:
                reason = RESTART_REASON.format(status=builder.status.value)
                self._track(builder.id, ensureDeferred(self._fail(builder.id, reason)))

    def stop_all(self) -> Deferred[None]:
        """Stop every running builder; fire once each is recorded FAILED (and the recovery's records are done)."""
        for builder_id in list(self._running):
            self._stop(builder_id, STOP_REASON)
        self._base_images.stop()
        return self._background.ended()

    # -- running ---------------------------------------------------------

    def _work_dir(self, builder: Builder) -> str:
        """The builder's own folder in the state directory, made if need be."""
        work_dir = os.path.join(self._state_dir, "builders", builder.id)
        os.makedirs(work_dir, exist_ok=True)
        return work_dir

    def _build_job(self, builder: Builder, template: Template) -> TargetBuildJob:
        """What the builder's target plug-in builds from."""
        return TargetBuildJob(
            builder=builder,
            work_dir=self._work_dir(builder),
            reactor=self._reactor,
            logs=self._logs,
            report=lambda percent: self._updater.move(builder.id, Status.BUILDING, percent),
            template=template,
            base_images=self._base_images,
            disk_door=self._disk_door,
            enter_stage=lambda stage: self._updater.enter_stage(builder.id, stage),
        )

    def _push_job(self, builder: Builder, target_builder: Builder, image: Image) -> ProviderPushJob:
        """What the builder's provider plug-in pushes from."""
        return ProviderPushJob(
            builder=builder,
            work_dir=self._work_dir(builder),
            reactor=self._reactor,
            logs=self._logs,
            report=lambda percent: self._updater.move(builder.id, Status.PUSHING, percent),
            target_builder=target_builder,
            image=image,
            image_store=self.image_store,
            disk_door=self._disk_door,
        )

    def _build_work(self, builder: Builder, template: Template) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def work() -> dict[str, Any]:
            target = self._targets[builder.target]
            artifact = await target.build(self._build_job(builder, template))
            # In the image store (checked, the local file gone) before the builder is COMPLETED.
            key = image_key(builder.id, artifact.path)
            location = await put_or_clean_up(self.image_store, artifact.path, key, artifact.sha256)
            await self._logs.append(builder.id, f"target image stored at {location}")
            return {"artifact_path": location, "artifact_size": artifact.size, "artifact_sha256": artifact.sha256}

        return work

    def _build_running(self, build_id: str) -> bool:
        """True while a target builder of the build is running."""
        return any(
            builder is not None and builder.operation == Operation.BUILD and builder.build_id == build_id
            for builder in map(self._index.get, self._running)
        )

    def _clean_up_after(self, build_id: str, ended: list[Deferred[None]]) -> None:
        """Once every target of a build has ended, remove its base image and install files.

        Each target image is a file of its own by then; the builders' logs
        live elsewhere and stay.  A daemon stopped before that leaves them
        to the next start, which removes every build's work files.
        """

        def clean(_: object) -> Deferred[None] | None:
            if self._build_running(build_id):
                # Targets added to the build later still need its base image; the last to end cleans up.
                return None
            self._base_images.forget(build_id)
            return self._disk_door.run(discard_path, os.path.join(self._state_dir, BUILDS_DIR, build_id))

        cleaned = DeferredList(ended, consumeErrors=True).addCallback(clean)
        self._background.run_logged(cleaned, self.log, "work files of build {build_id} not removed", build_id=build_id)

    def _push_work(
        self, builder: Builder, target_builder: Builder, image: Image, provider: Provider, credentials: Credentials
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def work() -> dict[str, Any]:
            job = self._push_job(builder, target_builder, image)
            try:
                pushed = await provider.push(job, credentials)
            finally:
                await job.discard_image_file()
            return {
                "identifier_on_provider": pushed.identifier,
                "provider_details": json.dumps(pushed.details) if pushed.details else None,
            }

        return work

    def _install_slot(self, builder: Builder, template: Template) -> Callable[[], Deferred[None]] | None:
        """For a target made from the base image: wait, PENDING, until the build's install holds a local session."""
        if not self._targets[builder.target].uses_base_image:
            return None
        following = follower(
            lambda percent: self._updater.move(builder.id, Status.BUILDING, percent),
            lambda stage: self._updater.enter_stage(builder.id, stage),
        )
        return lambda: self._base_images.wait_for_slot(builder.build_id, template, builder.id, following)

    def start_push(
        self, builder: Builder, target_builder: Builder, image: Image, provider: Provider, credentials: Credentials
    ) -> None:
        """Run a push's new builder (a push slot)."""
        self._launch(
            builder,
            self._push_slots,
            Status.PUSHING,
            self._push_work(builder, target_builder, image, provider, credentials),
        )

    def _launch(
        self,
        builder: Builder,
        slots: DeferredSemaphore,
        active: Status,
        work: Callable[[], Awaitable[dict[str, Any]]],
        ready: Callable[[], Deferred[None]] | None = None,
    ) -> None:
        running = _Running(deferred=Deferred())
        self._running[builder.id] = running
        running.deferred = ensureDeferred(self._run(builder.id, slots, active, work, running, ready))
        self._track(builder.id, running.deferred)
        running.deferred.addBoth(lambda _: self._running.pop(builder.id, None))

    async def _run(
        self,
        builder_id: str,
        slots: DeferredSemaphore,
        active: Status,
        work: Callable[[], Awaitable[dict[str, Any]]],
        running: _Running,
        ready: Callable[[], Deferred[None]] | None,
    ) -> None:
        try:
            await self._updater.move(builder_id, Status.PENDING, stage=StageName.WAITING)
            await slots.acquire()
            try:
                if ready is not None:
                    await ready()
                await self._updater.move(builder_id, active, 0, stage=self._first_stage(builder_id, active))
                changes = await work()
            finally:
                slots.release()
            await self._updater.move(builder_id, Status.COMPLETED, 100, **changes)
        except CancelledError:
            await self._wound_down(builder_id)
            if not running.record_end:
                return
            await self._fail(builder_id, running.stop_reason[0] if running.stop_reason else CANCEL_REASON)
        except InvalidTransition as error:
            # Another node ended it first (a cancel on an API node): its record stands.
            self.log.info("builder {builder_id} ended elsewhere: {reason}", builder_id=builder_id, reason=error.message)
        except ImageFactoryError as error:
            await self._fail(builder_id, error.message)
        except Exception:
            self.log.failure("builder {builder_id} failed unexpectedly", builder_id=builder_id)
            await self._fail(
                builder_id, f"unexpected error in the factory; its log has the details (builder {builder_id})"
            )

    def _first_stage(self, builder_id: str, active: Status) -> StageName | None:
        """The stage a builder's work starts in: ``pushing``, or ``converting`` for a target made without a
        base image; a target made from one follows its install's stages (None: it stays ``waiting`` till then)."""
        if active == Status.PUSHING:
            return StageName.PUSHING
        builder = self._index.get(builder_id)
        if builder is not None and not self._targets[builder.target].uses_base_image:
            return StageName.CONVERTING
        return None

    async def _wound_down(self, builder_id: str) -> None:
        """Wait (a bounded time) for the builder's abandoned install, if any, to have cleaned up its VM."""
        builder = self._index.get(builder_id)
        if builder is None or builder.operation != Operation.BUILD:
            return
        try:
            await self._base_images.wound_down(builder.build_id).addTimeout(WIND_DOWN_TIMEOUT, self._reactor)
        except WaitTimedOut:
            self.log.warn(
                "builder {builder_id}: its install did not end within {seconds} s of being cancelled",
                builder_id=builder_id,
                seconds=WIND_DOWN_TIMEOUT,
            )

    async def _fail(self, builder_id: str, reason: str) -> None:
        await self._updater.move(builder_id, Status.FAILED, status_detail=reason)

    def _stop(self, builder_id: str, reason: str) -> bool:
        running = self._running.get(builder_id)
        if running is None:
            return False
        running.stop_reason.append(reason)
        running.deferred.cancel()
        return True

    def _track(self, builder_id: str, deferred: Deferred[None]) -> None:
        """Keep background work until it ends (stopService waits) and log what it fails with."""
        self._background.run_logged(
            deferred, self.log, "background work for builder {builder_id} failed", builder_id=builder_id
        )
