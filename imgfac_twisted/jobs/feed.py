"""Keeps a node's builder index up to date with what other nodes change (several nodes on PostgreSQL).

Every node publishes each builder change on the event exchange (through its
outbox).  Each node also listens to all of them: an event about a builder
that the index holds at an older sequence, or does not hold, is read from
the store (the event tells what changed, the store is the truth) and put in
the index; a deleted builder is forgotten.  A worker running a builder that
another node ended (a cancel on an API node) is told, and stops it.

The subscription is made again on every reconnect, and then the index
catches up with what was missed meanwhile: every unfinished builder is read
from the store again, so that none is left showing a state it has left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import UnknownObject
from ..events import DELETED, Event
from ..events.amqp import AmqpBus
from ..model import Builder
from ..store import IStore
from .index import BuilderIndex

__all__ = ["IndexFeed"]


class IndexFeed(Service):
    """Feeds the index from every node's builder events; tells ``ended`` about builders that ended."""

    log = Logger()
    name = "index-feed"

    def __init__(
        self,
        bus: AmqpBus,
        store: IStore,
        index: BuilderIndex,
        ended: Callable[[Builder], None] | None = None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._index = index
        self._ended = ended
        self._unregister: Callable[[], None] | None = None

    def startService(self) -> None:
        """Subscribe to every builder event, now and after each reconnect."""
        super().startService()
        self._unregister = self._bus.when_connected(self._subscribe)

    def stopService(self) -> None:
        super().stopService()
        if self._unregister is not None:
            self._unregister()

    def _subscribe(self) -> Deferred[Any]:
        subscribed = self._bus.subscribe("#", self.seen)
        return subscribed.addCallback(lambda _: ensureDeferred(self.catch_up()))

    async def catch_up(self) -> None:
        """Bring the index up to the store for what the events may not have said (the broker was away):
        the unfinished builders, new ones included, and those held unfinished that have ended or gone."""
        stored = await self._store.list_unfinished_builders()
        for builder in stored:
            self._read(builder)
        still = {builder.id for builder in stored}
        for held in self._index.unfinished():
            if held.id not in still:
                self._store.get_builder(held.id).addCallbacks(self._read, self._not_read, errbackArgs=(held.id,))

    def seen(self, event: Event) -> None:
        """One builder event from any node: bring the index up to it."""
        body = event.body
        builder_id = body.get("id")
        if not isinstance(builder_id, str):
            return
        if body.get("new_status") == DELETED:
            self._index.remove([builder_id])
            return
        held = self._index.get(builder_id)
        if held is not None and held.sequence >= int(body.get("sequence", 0)):
            return  # this node made the change, or has seen a later one
        self._store.get_builder(builder_id).addCallbacks(self._read, self._not_read, errbackArgs=(builder_id,))

    def _read(self, builder: Builder) -> None:
        self._index.put(builder)
        if self._ended is not None:
            self._ended(builder)

    def _not_read(self, failure: Failure, builder_id: str) -> None:
        if failure.check(UnknownObject):
            self._index.remove([builder_id])  # deleted meanwhile
            return
        self.log.failure("builder {builder_id} not read after its event", failure, builder_id=builder_id)
