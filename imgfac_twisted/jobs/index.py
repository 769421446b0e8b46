"""The live read model of builders: a read-through cache in front of the store.

Reads of builder status are the daemon's hot path (clients poll them), so
they are answered from here without a store round trip when they can be.
The index does not hold every builder ever made (an installation may have
hundreds of thousands): it holds every unfinished builder, and the finished
ones most recently written or read, up to a bound; a miss reads the store
and keeps what it found.  It is fed by the one update function
(``BuilderUpdater``) and, with several nodes on one database, by the events
other nodes publish: ``put`` keeps the newest ``sequence`` of a builder.

Lists and counts of every builder are not answered from here but by the
store (``page``, ``count``), which has them all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred

from ..errors import UnknownObject
from ..model import Builder, Operation, Status
from ..store import IStore

#: Finished builders kept in memory (about 1 KiB each): the rest are read from the store.
FINISHED_CAPACITY = 20_000
#: Builders read from the store at a time by ``scan``.
SCAN_PAGE = 1000


class BuilderIndex:
    """Builders by id: every unfinished one, and a bounded LRU of finished ones."""

    def __init__(
        self, store: IStore, builders: Iterable[Builder] = (), finished_capacity: int = FINISHED_CAPACITY
    ) -> None:
        self.store = store
        self._capacity = finished_capacity
        self._unfinished: dict[str, Builder] = {}
        # Oldest use first: the first is the next to go.
        self._finished: OrderedDict[str, Builder] = OrderedDict()
        # Ids removed lately (oldest first): a late event or a store read begun before the
        # deletion must not bring a deleted builder back (ids are never reused).
        self._removed: OrderedDict[str, None] = OrderedDict()
        # What moves on when a provider image may have come (a push builder first held, by target image)
        # or gone (any builder removed): see ``pushes_version``.
        self._pushes_added: dict[str | None, int] = {}
        self._removals = 0
        for builder in builders:
            self.put(builder)

    def put(self, builder: Builder) -> None:
        """Remember the latest state of ``builder``, unless a newer one (higher ``sequence``) is held
        or it was removed."""
        if builder.id in self._removed:
            return
        held = self._held(builder.id)
        if held is not None and held.sequence > builder.sequence:
            return
        if held is None and builder.operation == Operation.PUSH:
            target = builder.target_image_id
            self._pushes_added[target] = self._pushes_added.get(target, 0) + 1
        if builder.status.is_final:
            self._unfinished.pop(builder.id, None)
            self._finished[builder.id] = builder
            self._finished.move_to_end(builder.id)
            while len(self._finished) > self._capacity:
                self._finished.popitem(last=False)
        else:
            self._finished.pop(builder.id, None)
            self._unfinished[builder.id] = builder

    def remove(self, builder_ids: Iterable[str]) -> None:
        """Forget deleted builders (their objects are gone: reads answer 404)."""
        self._removals += 1
        for builder_id in builder_ids:
            self._unfinished.pop(builder_id, None)
            self._finished.pop(builder_id, None)
            self._removed[builder_id] = None
        while len(self._removed) > self._capacity:
            self._removed.popitem(last=False)

    def get(self, builder_id: str) -> Builder | None:
        """The builder so named if it is held, or None (the hot path: no store read)."""
        builder = self._unfinished.get(builder_id)
        if builder is not None:
            return builder
        builder = self._finished.get(builder_id)
        if builder is not None:
            self._finished.move_to_end(builder_id)
        return builder

    async def lookup(self, builder_id: str) -> Builder | None:
        """The builder so named, read from the store (and then held) when it is not held; None when unknown."""
        builder = self.get(builder_id)
        if builder is not None:
            return builder
        try:
            builder = await self.store.get_builder(builder_id)
        except UnknownObject:
            return None
        self.put(builder)
        # A newer state may have been put while the store was read.
        return self.get(builder_id)

    def pushes_version(self, target_image_id: str) -> tuple[int, int]:
        """Changes when a provider image of ``target_image_id`` may have come or gone: what was read of its
        pushes (by ``scan``) holds while this stays the same."""
        return self._removals, self._pushes_added.get(target_image_id, 0)

    def unfinished(self) -> list[Builder]:
        """Every builder not yet COMPLETED or FAILED that this index holds (all of them on a single node)."""
        return sorted(self._unfinished.values(), key=lambda builder: builder.created)

    async def scan(self, wanted: Callable[[Builder], bool], after: str | None = None) -> list[Builder]:
        """Every builder ``wanted`` picks, oldest first, read from the store a page at a time (not the hot path).

        With ``after``, only the builders made after that one are read (e.g. a target image's pushes).
        """
        found: list[Builder] = []
        marker = after
        while True:
            try:
                page = await self.page(SCAN_PAGE, marker)
            except UnknownObject:
                # The page's marker was deleted meanwhile: read again from the very start.
                found, marker = [], None
                continue
            found.extend(builder for builder in page if wanted(builder))
            if len(page) < SCAN_PAGE:
                return found
            marker = page[-1].id

    async def page(self, limit: int, marker: str | None) -> list[Builder]:
        """Up to ``limit`` builders after ``marker`` (the first without), oldest first, from the store.

        Each is the newest state known: a builder held here with a higher
        ``sequence`` than the store's row is answered as held.  Fails with
        UnknownObject when ``marker`` names no builder.
        """
        stored = await self.store.list_builders_page(limit, marker)
        return [self._newest(builder) for builder in stored]

    def count(self) -> Deferred[dict[tuple[str, str], int]]:
        """Fire with how many builders there are of each (operation, status), every pair listed (0 if none)."""
        return self.store.count_builders().addCallback(every_pair)

    def _held(self, builder_id: str) -> Builder | None:
        return self._unfinished.get(builder_id) or self._finished.get(builder_id)

    def _newest(self, stored: Builder) -> Builder:
        held = self._held(stored.id)
        return held if held is not None and held.sequence > stored.sequence else stored

    def __len__(self) -> int:
        return len(self._unfinished) + len(self._finished)


def every_pair(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """``counts`` with every (operation, status) pair, those absent as 0."""
    every = {(operation.value, status.value): 0 for operation in Operation for status in Status}
    every.update(counts)
    return every
