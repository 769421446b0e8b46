"""The embedded store: one SQLite file in the state directory.

All SQL runs on one dedicated thread (``thd_*`` methods), because a SQLite
connection belongs to the thread that opened it and one writer at a time is
what SQLite wants anyway.  WAL journaling keeps a killed daemon's database
intact: what a committed transaction wrote survives ``kill -9``.  The tables
and migrations are in ``store.sqlite_schema``; the statements both SQL stores
share in ``store.sql``, ``store.rows`` and ``store.claims``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from typing import ClassVar, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from ..doors import IDoor, ThreadDoor
from ..events import Event
from . import IStore, IWorkStore, StoreUnavailable
from .sql import SqlStore
from .sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, migrate_to

# SCHEMA and SCHEMA_VERSION stay importable from here: the schema is part of what this module stores.
__all__ = ["SCHEMA", "SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")


@implementer(IStore, IWorkStore)
class SQLiteStore(SqlStore):
    """IStore (and IWorkStore) on a SQLite file, reached through a one-thread door."""

    #: Oldest first; the rowid orders builders made in the same instant (index ``builders_created``).
    ORDER: ClassVar[str] = "created, rowid"
    TIEBREAK: ClassVar[str] = "rowid"
    #: No row locks: ``BEGIN IMMEDIATE`` makes every write transaction the only one.
    LOCK_ROWS: ClassVar[str] = ""
    #: The builders' logs are files (``jobs.logs.BuilderLogs``).
    keeps_logs: ClassVar[bool] = False

    def __init__(self, path: str, door: IDoor) -> None:
        self._path = path
        self._door = door
        self._connection: sqlite3.Connection | None = None

    @classmethod
    def on_own_thread(cls, reactor: IReactorFromThreads, path: str) -> tuple[SQLiteStore, ThreadDoor]:
        """A store with its own one-thread door; start the door before the store."""
        door = ThreadDoor(reactor, "sqlite", threads=1)
        return cls(path, door), door

    # -- lifetime --------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Open the database and create missing tables."""
        return self._door.run(self.thd_open)

    def close(self) -> Deferred[None]:
        """Close the database connection."""
        return self._door.run(self.thd_close)

    def thd_open(self) -> None:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(SCHEMA)
        self._connection = connection
        found = self.thd_schema_version()
        if found > SCHEMA_VERSION:
            self.thd_close()
            raise StoreUnavailable(
                f"the store {self._path} has schema version {found}, made by a later release "
                f"(this one knows up to {SCHEMA_VERSION})"
            )
        self._migrate()

    def _migrate(self) -> None:
        """Apply the MIGRATIONS this database has not had, each in one transaction with its new version."""
        for version, statements in MIGRATIONS:
            self._in_transaction(functools.partial(migrate_to, version, statements))

    def thd_schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    def thd_close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the store is not open")
        return self._connection

    def _in_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one transaction: all of it is committed, or none."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    # -- the outbox: one node, nothing to claim --------------------------

    def pending_events(self, limit: int) -> Deferred[list[tuple[int, Event]]]:
        return self._door.run(self.thd_pending_events, limit)

    def thd_pending_events(self, limit: int) -> list[tuple[int, Event]]:
        rows = self._db().execute("SELECT id, event FROM outbox ORDER BY id LIMIT ?", [limit])
        return [(row["id"], Event.from_json(row["event"])) for row in rows]
