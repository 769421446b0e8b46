"""The shared store: PostgreSQL, for several nodes (API nodes and workers) at once.

The blocking calls run on a door of a few threads, each with its own connection (made on
first use, made again after the server dropped it).  The statements are those both SQL
stores share (``store.sql``), written with ``?`` and turned into psycopg's ``%s`` here.
What several nodes need on top: the outbox's rows are claimed with a lease (so the relay
runs on every node without publishing an event twice), claims lock their rows
(``FOR UPDATE``), and the builders' logs live here (``ILogStore``), so that every node reads
them.  The schema and its migrations are in ``store.postgres_schema``.  The URL's password
is never logged nor put in an error: ``redaction`` hides it.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.rows import dict_row
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from ..doors import IDoor, ThreadDoor
from ..events import Event
from ..redaction import redact_url, scrub
from . import ILogStore, IStore, IWorkStore, StoreUnavailable
from .postgres_schema import LOCK_CLASS_LOG, LOCK_CLASS_OUTBOX, SCHEMA_VERSION, migrate, schema_version
from .rows import Db, marks
from .sql import SqlStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "StoreUnavailable"]

T = TypeVar("T")

#: Threads (and connections) of the store's door: a few, as reads and writes may overlap.
THREADS = 4

#: How long an outbox row claimed by one node's relay is left to it before another may take it.
OUTBOX_LEASE_SECONDS = 30.0


class _Statements:
    """A psycopg connection as ``rows.Db``: ``?`` placeholders, rows as dicts."""

    def __init__(self, connection: psycopg.Connection[dict[str, Any]]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[dict[str, Any]]:
        # No statement of the stores has a literal "?" or "%": the placeholders are all there is to turn.
        return self._connection.execute(sql.replace("?", "%s").encode("utf-8"), list(parameters))


@implementer(IStore, ILogStore, IWorkStore)
class PostgresStore(SqlStore):
    """IStore, ILogStore and IWorkStore on PostgreSQL (``store_url`` ``postgresql://...``)."""

    #: Oldest first; ``position`` orders builders made in the same instant (index ``builders_created``).
    ORDER: ClassVar[str] = "created, position"
    TIEBREAK: ClassVar[str] = "position"
    LOCK_ROWS: ClassVar[str] = " FOR UPDATE"
    #: The builders' logs are here, so that every node reads them.
    keeps_logs: ClassVar[bool] = True

    def __init__(self, url: str, door: IDoor, owner: str | None = None) -> None:
        self._url = url
        self._door = door
        #: Who claims outbox rows: this store instance (one per node).
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        password = urlsplit(url).password
        self._secrets = [password, unquote(password)] if password else []
        self._local = threading.local()
        self._connections: list[psycopg.Connection[dict[str, Any]]] = []
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)!r})"

    @classmethod
    def on_own_threads(cls, reactor: IReactorFromThreads, url: str) -> tuple[PostgresStore, ThreadDoor]:
        """A store with its own door of a few threads; start the door before the store."""
        door = ThreadDoor(reactor, "postgres", threads=THREADS)
        return cls(url, door), door

    # -- connections -------------------------------------------------------

    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        """The calling thread's connection, made (again) when there is none or the server dropped it."""
        connection: psycopg.Connection[dict[str, Any]] | None = getattr(self._local, "connection", None)
        if connection is None or connection.closed or connection.broken:
            dropped, connection = connection, self._connect()
            self._local.connection = connection
            with self._guard:
                if dropped is not None and dropped in self._connections:
                    self._connections.remove(dropped)
                self._connections.append(connection)
            if dropped is not None:
                dropped.close()
        return connection

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        try:
            return psycopg.connect(self._url, autocommit=True, row_factory=dict_row, connect_timeout=10)
        except psycopg.Error as error:
            raise StoreUnavailable(
                f"cannot connect to the store at {redact_url(self._url)}: {scrub(str(error), self._secrets)}"
            ) from None

    def _db(self) -> Db:
        return _Statements(self._connection())

    def _in_transaction(self, work: Callable[[Db], T]) -> T:
        connection = self._connection()
        with connection.transaction():
            return work(_Statements(connection))

    # -- lifetime ----------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Connect and bring the schema up to date."""
        return self._door.run(self.thd_open)

    def close(self) -> Deferred[None]:
        """Close every thread's connection."""
        return self._door.run(self.thd_close)

    def thd_open(self) -> None:
        """Connect and migrate, blocking (before the reactor runs, or on the door).

        Fails with StoreUnavailable when the database cannot be reached, or when a later
        release made its schema (this one would not know its tables).
        """
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as connection:
                before = migrate(connection)
        except psycopg.Error as error:
            raise StoreUnavailable(
                f"cannot open the store at {redact_url(self._url)}: {scrub(str(error), self._secrets)}"
            ) from None
        if before > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the store at {redact_url(self._url)} has schema version {before}, made by a later release "
                f"(this one knows up to {SCHEMA_VERSION})"
            )

    def thd_schema_version(self) -> int:
        """The schema version of the database."""
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as connection:
            return schema_version(connection)

    def thd_close(self) -> None:
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    # -- the outbox, claimed -------------------------------------------------

    def pending_events(self, limit: int) -> Deferred[list[tuple[int, Event]]]:
        return self._door.run(self.thd_pending_events, limit)

    def thd_pending_events(self, limit: int) -> list[tuple[int, Event]]:
        """Claim up to ``limit`` outbox rows for this instance (free ones, lapsed ones, or its own), oldest first.

        Events must come out in order (a builder's, at least), so a relay never claims a row
        newer than one another relay holds: the claims take turns (an advisory lock), and the
        rows claimed stop before the oldest row held elsewhere.  While one node drains, the
        others wait for its claim to lapse (OUTBOX_LEASE_SECONDS) or its rows to be delivered;
        the events of a node that died are published by another once its claim lapses.
        """
        return self._in_transaction(lambda db: self._claim_events(db, limit))

    def _claim_events(self, db: Db, limit: int) -> list[tuple[int, Event]]:
        db.execute("SELECT pg_advisory_xact_lock(?, 0)", [LOCK_CLASS_OUTBOX])
        rows = db.execute(
            "UPDATE outbox SET claimed_by = ?, claimed_until = now() + make_interval(secs => ?) "
            "WHERE id IN (SELECT id FROM outbox "
            "WHERE (claimed_until IS NULL OR claimed_until < now() OR claimed_by = ?) "
            "AND id < COALESCE((SELECT min(id) FROM outbox WHERE claimed_by <> ? AND claimed_until >= now()), "
            "9223372036854775807) "
            "ORDER BY id LIMIT ?) RETURNING id, event",
            [self.owner, OUTBOX_LEASE_SECONDS, self.owner, self.owner, limit],
        ).fetchall()
        return sorted((int(row["id"]), Event.from_json(row["event"])) for row in rows)

    # -- logs -------------------------------------------------------------------

    def append_log(self, builder_id: str, lines: Sequence[str]) -> Deferred[None]:
        copied = tuple(lines)
        return self._door.run(self._in_transaction, lambda db: self._append_log_in(db, builder_id, copied))

    def _append_log_in(self, db: Db, builder_id: str, lines: Sequence[str]) -> None:
        if not lines:
            return
        # Appends to one builder's log take turns: each starts where the last one ended.
        db.execute("SELECT pg_advisory_xact_lock(?, hashtext(?))", [LOCK_CLASS_LOG, builder_id])
        last = db.execute(
            "SELECT byte_start + size AS end FROM builder_logs WHERE builder_id = ? ORDER BY byte_start DESC LIMIT 1",
            [builder_id],
        ).fetchone()
        start = int(last["end"]) if last else 0
        values: list[Any] = []
        for line in lines:
            size = len(line.encode("utf-8")) + 1
            values += [builder_id, start, size, line]
            start += size
        rows = ", ".join(["(?, ?, ?, ?)"] * len(lines))
        db.execute(f"INSERT INTO builder_logs (builder_id, byte_start, size, line) VALUES {rows}", values)

    def read_log(self, builder_id: str, offset: int, limit: int) -> Deferred[bytes]:
        return self._door.run(self.thd_read_log, builder_id, offset, limit)

    def thd_read_log(self, builder_id: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the log's UTF-8 text (a newline after each line) from byte ``offset``."""
        if limit <= 0:
            return b""
        offset = max(offset, 0)
        # From the line holding ``offset`` (found by the index) to the one holding its last byte.
        rows = (
            self._db()
            .execute(
                "SELECT byte_start, line FROM builder_logs WHERE builder_id = ? AND byte_start < ? "
                "AND byte_start >= COALESCE((SELECT MAX(byte_start) FROM builder_logs "
                "WHERE builder_id = ? AND byte_start <= ?), 0) ORDER BY byte_start",
                [builder_id, offset + limit, builder_id, offset],
            )
            .fetchall()
        )
        if not rows:
            return b""
        text = "".join(row["line"] + "\n" for row in rows).encode("utf-8")
        skip = offset - int(rows[0]["byte_start"])
        return text[skip : skip + limit]

    # -- for the tests -------------------------------------------------------------

    def thd_count_logs(self, builder_ids: Sequence[str]) -> int:
        """How many log lines those builders have (for the tests of deletions)."""
        if not builder_ids:
            return 0
        row = (
            self._db()
            .execute(
                f"SELECT COUNT(*) AS n FROM builder_logs WHERE builder_id IN ({marks(len(builder_ids))})",
                list(builder_ids),
            )
            .fetchone()
        )
        return int(row["n"])
