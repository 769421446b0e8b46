"""The one function through which every builder change goes: persist (with its event), then publish."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..doors import shielded
from ..errors import UnknownObject
from ..events import Event, event_for_change, event_for_deletion
from ..metrics import Metrics
from ..model import (
    Build,
    Builder,
    BuilderChange,
    Image,
    ProviderImage,
    StageName,
    Status,
    TargetImage,
    entered,
)
from ..store import IStore
from .index import BuilderIndex
from .logs import IBuilderLogs
from .relay import OutboxRelay


class BuilderUpdater:
    """Moves builders: checks the transition, writes the store and the event outbox, updates the index, wakes the relay.

    Changes of one builder are applied one at a time, in the order asked,
    so its events come out in order; different builders do not wait for
    each other.
    """

    log = Logger()

    def __init__(
        self,
        store: IStore,
        relay: OutboxRelay,
        index: BuilderIndex,
        logs: IBuilderLogs,
        metrics: Metrics,
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._relay = relay
        self._logs = logs
        self._index = index
        self._clock = clock
        self._locks: dict[str, DeferredLock] = {}

    async def record_build(
        self,
        image: Image,
        build: Build,
        target_images: list[TargetImage],
        builders: list[Builder],
        new_image: bool,
        jobs: Sequence[Event] = (),
    ) -> None:
        """Record a new build with its NEW builders, their creation events and ``jobs`` (work queue messages)."""
        events = self._creations(builders) + list(jobs)
        await self._store.record_build(image, build, target_images, builders, new_image, events)
        self._created(builders)

    async def record_push(self, provider_image: ProviderImage, builder: Builder, jobs: Sequence[Event] = ()) -> None:
        """Record a new provider image with its NEW push builder, its creation event and ``jobs``."""
        await self._store.record_push(provider_image, builder, self._creations([builder]) + list(jobs))
        self._created([builder])

    async def record_created(
        self, builders: list[Builder], write: Callable[[list[Event]], Deferred[None]], jobs: Sequence[Event] = ()
    ) -> None:
        """Record new builders with what ``write(events)`` stores (in one transaction): their creation
        events and ``jobs``."""
        await write(self._creations(builders) + list(jobs))
        self._created(builders)

    async def delete(self, builders: list[Builder], delete_records: Callable[[list[Event]], Deferred[None]]) -> None:
        """Remove ``builders`` with the records above them, one DELETED event each in the same transaction.

        ``delete_records(events)`` is the store's deletion of the object;
        the builders are then forgotten (both APIs answer 404) and the
        events published.
        """
        now = self._clock.seconds()
        await delete_records([event_for_deletion(builder, now) for builder in builders])
        self._index.remove(builder.id for builder in builders)
        self._relay.wake()

    def _creations(self, builders: list[Builder]) -> list[Event]:
        now = self._clock.seconds()
        return [event_for_change(BuilderChange(old=None, new=builder), now) for builder in builders]

    def _created(self, builders: list[Builder]) -> None:
        for builder in builders:
            self._index.put(builder)
            what = f"{builder.operation.value} {builder.target}" + (
                f" to {builder.provider}" if builder.provider else ""
            )
            self.log.info("builder {builder_id} created ({what})", builder_id=builder.id, what=what)
            self._logs.append(builder.id, f"NEW: {what}")
        self._relay.wake()

    def move(
        self,
        builder_id: str,
        status: Status,
        completed: int | None = None,
        *,
        stage: StageName | None = None,
        **changes: Any,
    ) -> Deferred[Builder]:
        """Move a builder to ``status`` (and ``completed``, and into ``stage``); fire with the new Builder.

        Cancelling the returned Deferred does not cancel the change: a store
        write that was cut half-way would leave the store and the index
        disagreeing.  The caller stops waiting; the change still lands.
        """
        return shielded(
            self._serially(builder_id, lambda: self._move(builder_id, status, completed, changes, stage)),
            "builder change failed after its caller stopped waiting",
        )

    def enter_stage(self, builder_id: str, stage: StageName) -> Deferred[Builder]:
        """Start ``stage`` of a builder's work (ending the one that ran); fire with the Builder.

        Nothing changes when that stage runs already, or the builder has
        ended.  Like ``move``, the change lands even if the caller stops waiting.
        """
        return shielded(
            self._serially(builder_id, lambda: self._enter_stage(builder_id, stage)),
            "builder stage change failed after its caller stopped waiting",
        )

    async def _enter_stage(self, builder_id: str, stage: StageName) -> Builder:
        old = self._index.get(builder_id)
        if old is None:
            raise UnknownObject(f"no builder with id {builder_id!r}")
        if old.status.is_final:
            return old
        return await self._move(builder_id, old.status, None, {}, stage)

    async def _move(
        self,
        builder_id: str,
        status: Status,
        completed: int | None,
        changes: dict[str, Any],
        stage: StageName | None = None,
    ) -> Builder:
        old = self._index.get(builder_id)
        if old is None:
            raise UnknownObject(f"no builder with id {builder_id!r}")
        now = self._clock.seconds()
        stages = entered(old.stages, stage, now) if stage is not None else old.stages
        if stages != old.stages:
            changes = {**changes, "stages": stages}
        new = old.moved(status, completed, now=now, **changes)
        if new.status == old.status and new.completed == old.completed and not changes:
            return old
        messages = _log_messages(old, new)
        # A store that keeps the logs writes these lines with the change: once any node shows
        # the builder COMPLETED, its log is complete too.
        lines = [self._logs.stamped(message) for message in messages]
        await self._store.save_builder(new, old.status, event_for_change(BuilderChange(old=old, new=new), now), lines)
        self._index.put(new)
        self._metrics.builder_moved(old, new)
        if new.status != old.status:
            self.log.info("builder {builder_id} {change}", builder_id=builder_id, change=messages[0])
        if not self._store.keeps_logs:
            for message in messages:
                await self._logs.append(builder_id, message)
        self._relay.wake()
        return new

    def _serially(self, builder_id: str, work: Callable[[], Coroutine[Any, Any, Builder]]) -> Deferred[Builder]:
        lock = self._locks.setdefault(builder_id, DeferredLock())

        def release(result: Builder | Failure) -> Builder | Failure:
            # Forget the lock once nobody holds or waits for it, so the
            # table does not grow with every builder ever seen.
            if not lock.locked and not lock.waiting and self._locks.get(builder_id) is lock:
                del self._locks[builder_id]
            return result

        return lock.run(lambda: ensureDeferred(work())).addBoth(release)


def _log_messages(old: Builder, new: Builder) -> list[str]:
    """The builder log's lines for a change: its new status (with the reason), its new stage."""
    messages = []
    if new.status != old.status:
        detail = f": {new.status_detail}" if new.status_detail else ""
        messages.append(f"{old.status.value} -> {new.status.value}{detail}")
    if new.stage is not None and new.stage != old.stage:
        messages.append(f"stage: {new.stage.value}")
    return messages
