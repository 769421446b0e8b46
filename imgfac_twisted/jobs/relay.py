"""The outbox relay: moves events from the store's outbox to the bus.

Events are written to the outbox in the same transaction as the builder
change they describe, so none is lost when the broker is away or the daemon
dies.  The relay hands them to the bus oldest first and deletes them only
once the bus has confirmed them; if the bus fails, it tries again later
(delivery is at least once: a consumer may see a duplicate, never a gap).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..deferreds import observe
from ..events import IEventBus
from ..store import IStore


class OutboxRelay(Service):
    """Drains the outbox into a bus whenever woken, retrying with capped backoff."""

    log = Logger()
    name = "outbox-relay"

    def __init__(
        self,
        store: IStore,
        bus: IEventBus,
        clock: IReactorTime,
        batch: int = 200,
        first_retry: float = 0.5,
        max_retry: float = 5.0,
        poll_every: float | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self._batch = batch
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._retry_in = first_retry
        self._retry_call: Any = None
        self._draining: Deferred[None] | None = None
        self._woken = False
        self._failing = False
        #: On a shared store, other nodes' events may wait for this relay (theirs died, or is held
        #: back behind this one's batch): look at the outbox this often even when not woken.
        self._poll_every = poll_every
        self._poll = LoopingCall(self.wake)
        self._poll.clock = clock

    def startService(self) -> None:
        """Deliver what a previous run left in the outbox."""
        super().startService()
        self.wake()
        if self._poll_every is not None:
            self._poll.start(self._poll_every, now=False)

    def stopService(self) -> Deferred[None]:
        """Stop retrying; wait (briefly) for a drain under way."""
        super().stopService()
        if self._poll.running:
            self._poll.stop()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        if self._draining is None:
            return succeed(None)
        waiting = observe(self._draining)
        # What is still unconfirmed stays in the outbox for the next start.
        return waiting.addTimeout(5, self._clock, onTimeoutCancel=lambda *_: None)

    def wake(self) -> None:
        """There may be new events: drain now, or right after the drain under way.

        While the bus is failing, new events wait for the next retry.
        """
        self._woken = True
        if self._draining is None and self._retry_call is None and self.running:
            self._draining = ensureDeferred(self._drain())
            self._draining.addErrback(lambda failure: self.log.failure("outbox relay failed", failure))
            self._draining.addBoth(self._drained)

    def _drained(self, _: Any) -> None:
        self._draining = None
        if self._woken:
            self.wake()

    async def _drain(self) -> None:
        while self._woken and self.running:
            self._woken = False
            while True:
                pending = await self._store.pending_events(self._batch)
                if not pending:
                    break
                try:
                    # Published in order on one channel; confirms may come
                    # back batched, so wait for the whole batch.
                    await gatherResults([self._bus.publish(event) for _, event in pending], consumeErrors=True)
                except Exception as error:
                    self._retry_later(error)
                    return
                await self._store.delete_events([outbox_id for outbox_id, _ in pending])
                self._recovered()

    def _retry_later(self, error: Exception) -> None:
        cause = getattr(error, "subFailure", None)
        reason = cause.getErrorMessage() if cause is not None else str(error)
        if not self._failing:
            self.log.warn("event bus unavailable ({reason}); events wait in the outbox", reason=reason)
            self._failing = True
        delay, self._retry_in = self._retry_in, min(self._retry_in * 2, self._max_retry)
        self._retry_call = self._clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self.wake()

    def retry_now(self) -> None:
        """The bus is back (e.g. reconnected): drain at once instead of at the next retry."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
            self._retry_call = None
        self.wake()

    def _recovered(self) -> None:
        if self._failing:
            self.log.info("event bus available again; delivering the outbox")
            self._failing = False
        self._retry_in = self._first_retry
