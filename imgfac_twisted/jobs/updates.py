"""The one function through which every builder change goes: persist, then publish."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable

from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import UnknownObject
from ..events import IEventBus
from ..model import Builder, BuilderChange, Status
from ..store import IStore
from .index import BuilderIndex


class BuilderUpdater:
    """Moves builders: checks the transition, writes the store, updates the index, publishes.

    Changes of one builder are applied one at a time, in the order asked,
    so its events come out in order; different builders do not wait for
    each other.
    """

    log = Logger()

    def __init__(self, store: IStore, bus: IEventBus, index: BuilderIndex, clock: Any) -> None:
        self._store = store
        self._bus = bus
        self._index = index
        self._clock = clock
        self._locks: dict[str, DeferredLock] = {}

    async def created(self, builders: Iterable[Builder]) -> None:
        """Announce builders that the store has just recorded as NEW."""
        for builder in builders:
            self._index.put(builder)
            self.log.info("builder {builder_id} created ({operation} {target})",
                          builder_id=builder.id, operation=builder.operation.value, target=builder.target)
            await self._bus.publish(BuilderChange(old=None, new=builder))

    def move(self, builder_id: str, status: Status, completed: int | None = None, **changes: Any) -> Deferred:
        """Move a builder to ``status`` (and ``completed``); fire with the new Builder.

        Cancelling the returned Deferred does not cancel the change: a store
        write that was cut half-way would leave the store and the index
        disagreeing.  The caller stops waiting; the change still lands.
        """
        return _shielded(self._serially(builder_id, lambda: self._move(builder_id, status, completed, changes)))

    async def _move(self, builder_id: str, status: Status, completed: int | None, changes: dict[str, Any]) -> Builder:
        old = self._index.get(builder_id)
        if old is None:
            raise UnknownObject(f"no builder with id {builder_id!r}")
        new = old.moved(status, completed, now=self._clock.seconds(), **changes)
        if new.status == old.status and new.completed == old.completed and not changes:
            return old
        await self._store.save_builder(new, old.status)
        self._index.put(new)
        if new.status != old.status:
            self.log.info("builder {builder_id} {old_status} -> {status}{detail}", builder_id=builder_id,
                          old_status=old.status.value, status=new.status.value,
                          detail=f": {new.status_detail}" if new.status_detail else "")
        await self._bus.publish(BuilderChange(old=old, new=new))
        return new

    def _serially(self, builder_id: str, work: Callable[[], Awaitable[Builder]]) -> Deferred:
        lock = self._locks.setdefault(builder_id, DeferredLock())

        def release(result: Any) -> Any:
            # Forget the lock once nobody holds or waits for it, so the
            # table does not grow with every builder ever seen.
            if not lock.locked and not lock.waiting and self._locks.get(builder_id) is lock:
                del self._locks[builder_id]
            return result

        return lock.run(lambda: ensureDeferred(work())).addBoth(release)


def _shielded(inner: Deferred) -> Deferred:
    """A Deferred with ``inner``'s result whose cancellation leaves ``inner`` running."""
    outer: Deferred = Deferred(lambda _: None)

    def forward(result: Any) -> None:
        if not outer.called:
            (outer.errback if isinstance(result, Failure) else outer.callback)(result)
        elif isinstance(result, Failure):
            Logger().failure("builder change failed after its caller stopped waiting", result)

    inner.addBoth(forward)
    return outer
