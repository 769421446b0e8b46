"""The live read model of every builder, kept in memory.

Reads of builder status are the daemon's hot path (clients poll them), so
they are answered from here without a store round trip.  The index is fed
by the one update function (``BuilderUpdater``); with several daemons on one
database it will also be fed by the events other daemons publish.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Builder, Operation, Status


class BuilderIndex:
    """Builders by id, in creation order."""

    def __init__(self, builders: Iterable[Builder] = ()) -> None:
        self._builders: dict[str, Builder] = {builder.id: builder for builder in builders}

    def put(self, builder: Builder) -> None:
        """Remember the latest state of ``builder``."""
        self._builders[builder.id] = builder

    def remove(self, builder_ids: Iterable[str]) -> None:
        """Forget deleted builders (their objects are gone: reads answer 404)."""
        for builder_id in builder_ids:
            self._builders.pop(builder_id, None)

    def get(self, builder_id: str) -> Builder | None:
        """The builder so named, or None."""
        return self._builders.get(builder_id)

    def all(self) -> list[Builder]:
        """Every builder, oldest first."""
        return list(self._builders.values())

    def counts(self) -> dict[tuple[str, str], int]:
        """How many builders there are of each (operation, status), every pair listed."""
        counts = {(operation.value, status.value): 0 for operation in Operation for status in Status}
        for builder in self._builders.values():
            counts[builder.operation.value, builder.status.value] += 1
        return counts

    def __len__(self) -> int:
        return len(self._builders)
