"""The embedded store: one SQLite file in the state directory.

All SQL runs on one dedicated thread (``thd_*`` methods), because a SQLite
connection belongs to the thread that opened it and one writer at a time is
what SQLite wants anyway.  WAL journaling keeps a killed daemon's database
intact: what a committed transaction wrote survives ``kill -9``.  The tables,
migrations and row mapping are in ``store.sqlite_schema``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from zope.interface import implementer

from ..doors import IDoor, ThreadDoor
from ..errors import InvalidTransition, UnknownObject
from ..events import Event
from ..model import (
    FINAL_STATUSES,
    Build,
    Builder,
    Image,
    ProviderImage,
    Status,
    StoredTemplate,
    TargetImage,
    new_id,
)
from . import IStore
from .sqlite_schema import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    columns,
    from_row,
    insert_sql,
    migrate_to,
    outbox_inserts,
    row_values,
)

# SCHEMA and SCHEMA_VERSION stay importable from here: the schema is part of what this module stores.
__all__ = ["SCHEMA", "SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")


@implementer(IStore)
class SQLiteStore:
    """IStore on a SQLite file, reached through a one-thread door."""

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

    def _transaction(self, statements: list[tuple[str, list[Any]]]) -> None:
        def execute_all(db: sqlite3.Connection) -> None:
            for sql, values in statements:
                db.execute(sql, values)

        self._in_transaction(execute_all)

    def _inserts(self, objects: Iterable[Any]) -> list[tuple[str, list[Any]]]:
        return [(insert_sql(type(obj)), row_values(obj)) for obj in objects]

    def _get(self, kind: type[T], object_id: str, what: str) -> T:
        row = self._db().execute(f"SELECT * FROM {TABLES[kind]} WHERE id = ?", [object_id]).fetchone()
        if row is None:
            raise UnknownObject(f"no {what} with id {object_id!r}")
        return from_row(kind, row)

    # -- IStore ----------------------------------------------------------

    def add_template(self, xml: str, now: float) -> Deferred[StoredTemplate]:
        return self._door.run(self.thd_add_template, xml, now)

    def thd_add_template(self, xml: str, now: float) -> StoredTemplate:
        digest = hashlib.sha256(xml.encode("utf-8")).hexdigest()
        db = self._db()
        row = db.execute("SELECT * FROM templates WHERE sha256 = ?", [digest]).fetchone()
        if row is None:
            template = StoredTemplate(id=new_id(), xml=xml, created=now)
            db.execute(
                "INSERT INTO templates (id, sha256, xml, created) VALUES (?, ?, ?, ?)",
                [template.id, digest, xml, now],
            )
            return template
        return from_row(StoredTemplate, row)

    def get_template(self, template_id: str) -> Deferred[StoredTemplate]:
        return self._door.run(self._get, StoredTemplate, template_id, "template")

    def record_build(
        self,
        image: Image,
        build: Build,
        target_images: list[TargetImage],
        builders: list[Builder],
        new_image: bool,
        events: list[Event],
    ) -> Deferred[None]:
        objects = ([image] if new_image else []) + [build, *target_images, *builders]
        return self._door.run(self._transaction, self._inserts(objects) + outbox_inserts(events))

    def record_push(self, provider_image: ProviderImage, builder: Builder, events: list[Event]) -> Deferred[None]:
        return self._door.run(self._transaction, self._inserts([provider_image, builder]) + outbox_inserts(events))

    def add_to_build(
        self, target_images: list[TargetImage], builders: list[Builder], events: list[Event]
    ) -> Deferred[None]:
        return self._door.run(self._transaction, self._inserts([*target_images, *builders]) + outbox_inserts(events))

    def record_import(
        self,
        image: Image,
        build: Build,
        target_image: TargetImage,
        provider_image: ProviderImage,
        builders: list[Builder],
        events: list[Event],
    ) -> Deferred[None]:
        objects = [image, build, target_image, provider_image, *builders]
        return self._door.run(self._transaction, self._inserts(objects) + outbox_inserts(events))

    #: The builders' logs are files (``jobs.logs.BuilderLogs``).
    keeps_logs = False

    def save_builder(
        self, builder: Builder, expected_status: Status, event: Event, log_lines: Sequence[str] = ()
    ) -> Deferred[None]:
        return self._door.run(self.thd_save_builder, builder, expected_status, event)

    def thd_save_builder(self, builder: Builder, expected_status: Status, event: Event) -> None:
        # Only a claim sets the worker.
        names = [name for name in columns(Builder) if name not in ("id", "worker")]
        values = dict(zip(columns(Builder), row_values(builder)))

        def guarded_update(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                f"UPDATE builders SET {', '.join(f'{name} = ?' for name in names)} WHERE id = ? AND status = ?",
                [values[name] for name in names] + [builder.id, expected_status.value],
            )
            if cursor.rowcount != 1:
                raise InvalidTransition(
                    f"builder {builder.id} is no longer {expected_status.value}: another writer moved it"
                )
            for sql, row in outbox_inserts([event]):
                db.execute(sql, row)

        self._in_transaction(guarded_update)

    def pending_events(self, limit: int) -> Deferred[list[tuple[int, Event]]]:
        return self._door.run(self.thd_pending_events, limit)

    def thd_pending_events(self, limit: int) -> list[tuple[int, Event]]:
        rows = self._db().execute("SELECT id, event FROM outbox ORDER BY id LIMIT ?", [limit])
        return [(row["id"], Event.from_json(row["event"])) for row in rows]

    def delete_events(self, outbox_ids: list[int]) -> Deferred[None]:
        return self._door.run(self._transaction, [("DELETE FROM outbox WHERE id = ?", [i]) for i in outbox_ids])

    def spend_nonce(self, client_key: str, nonce: str, expiry: float, now: float) -> Deferred[None]:
        """Record an OAuth nonce as spent until ``expiry``; forget those expired before ``now``."""
        return self._door.run(
            self._transaction,
            [
                (
                    "INSERT OR REPLACE INTO oauth_nonces (client_key, nonce, expiry) VALUES (?, ?, ?)",
                    [client_key, nonce, expiry],
                ),
                ("DELETE FROM oauth_nonces WHERE expiry < ?", [now]),
            ],
        )

    def thd_spent_nonces(self, now: float) -> list[tuple[str, str, float]]:
        """The OAuth nonces spent and not expired at ``now`` (blocking: for start-up, before the reactor runs)."""
        rows = self._db().execute("SELECT client_key, nonce, expiry FROM oauth_nonces WHERE expiry >= ?", [now])
        return [(row["client_key"], row["nonce"], row["expiry"]) for row in rows]

    def count_pending_events(self) -> Deferred[int]:
        return self._door.run(lambda: self._db().execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def save_manifest(self, build_id: str, packages: Sequence[tuple[str, str, str]]) -> Deferred[None]:
        return self._door.run(
            self._transaction,
            [
                (
                    "INSERT OR REPLACE INTO manifests (build_id, packages) VALUES (?, ?)",
                    [build_id, json.dumps([list(package) for package in packages])],
                )
            ],
        )

    def get_manifest(self, build_id: str) -> Deferred[list[tuple[str, str, str]] | None]:
        return self._door.run(self.thd_get_manifest, build_id)

    def thd_get_manifest(self, build_id: str) -> list[tuple[str, str, str]] | None:
        row = self._db().execute("SELECT packages FROM manifests WHERE build_id = ?", [build_id]).fetchone()
        if row is None:
            return None
        return [(name, version, arch) for name, version, arch in json.loads(row["packages"])]

    def get_image(self, image_id: str) -> Deferred[Image]:
        return self._door.run(self._get, Image, image_id, "image")

    def get_build(self, build_id: str) -> Deferred[Build]:
        return self._door.run(self._get, Build, build_id, "build")

    def get_target_image(self, target_image_id: str) -> Deferred[TargetImage]:
        return self._door.run(self._get, TargetImage, target_image_id, "target image")

    def get_provider_image(self, provider_image_id: str) -> Deferred[ProviderImage]:
        return self._door.run(self._get, ProviderImage, provider_image_id, "provider image")

    def get_builder(self, builder_id: str) -> Deferred[Builder]:
        return self._door.run(self._get, Builder, builder_id, "builder")

    def list_builders(self) -> Deferred[list[Builder]]:
        return self._door.run(self.thd_list_builders)

    def thd_list_builders(self) -> list[Builder]:
        """Every builder, oldest first (blocking: for start-up, before the reactor runs)."""
        return self._select_builders("1 = 1", [])

    def list_builders_page(self, limit: int, marker: str | None) -> Deferred[list[Builder]]:
        return self._door.run(self.thd_list_builders_page, limit, marker)

    def thd_list_builders_page(self, limit: int, marker: str | None) -> list[Builder]:
        if marker is None:
            return self._select_builders("1 = 1", [], limit)
        row = self._db().execute("SELECT created, rowid FROM builders WHERE id = ?", [marker]).fetchone()
        if row is None:
            raise UnknownObject(f"no builder with id {marker!r}")
        return self._select_builders("(created, rowid) > (?, ?)", [row[0], row[1]], limit)

    def count_builders(self) -> Deferred[dict[tuple[str, str], int]]:
        return self._door.run(self.thd_count_builders)

    def thd_count_builders(self) -> dict[tuple[str, str], int]:
        rows = self._db().execute("SELECT operation, status, COUNT(*) FROM builders GROUP BY operation, status")
        return {(operation, status): count for operation, status, count in rows}

    def list_unfinished_builders(self) -> Deferred[list[Builder]]:
        return self._door.run(self.thd_list_unfinished_builders)

    def thd_list_unfinished_builders(self) -> list[Builder]:
        """Every builder not COMPLETED or FAILED, oldest first (blocking: for start-up, before the reactor runs)."""
        return self._select_builders("status NOT IN (?, ?)", [status.value for status in FINAL_STATUSES])

    def _select_builders(self, where: str, values: list[Any], limit: int = -1) -> list[Builder]:
        rows = self._db().execute(
            f"SELECT * FROM builders WHERE {where} ORDER BY created, rowid LIMIT ?", [*values, limit]
        )
        return [from_row(Builder, row) for row in rows]

    def list_images(self) -> Deferred[list[Image]]:
        return self._door.run(self._select_all, Image)

    def list_builds(self) -> Deferred[list[Build]]:
        return self._door.run(self._select_all, Build)

    def _select_all(self, kind: type[T]) -> list[T]:
        rows = self._db().execute(f"SELECT * FROM {TABLES[kind]} ORDER BY created, rowid")
        return [from_row(kind, row) for row in rows]

    # Children before parents: the foreign keys are enforced.
    def delete_image(self, image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._door.run(
            self._transaction,
            [("DELETE FROM manifests WHERE build_id IN (SELECT id FROM builds WHERE image_id = ?)", [image_id])]
            + [
                (f"DELETE FROM {table} WHERE {column} = ?", [image_id])
                for table, column in (
                    ("builders", "image_id"),
                    ("provider_images", "image_id"),
                    ("target_images", "image_id"),
                    ("builds", "image_id"),
                    ("images", "id"),
                )
            ]
            + outbox_inserts(events),
        )

    def delete_build(self, build_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._door.run(
            self._transaction,
            [
                (f"DELETE FROM {table} WHERE {column} = ?", [build_id])
                for table, column in (
                    ("builders", "build_id"),
                    ("provider_images", "build_id"),
                    ("target_images", "build_id"),
                    ("builds", "id"),
                    ("manifests", "build_id"),
                )
            ]
            + outbox_inserts(events),
        )

    def delete_target_image(self, target_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._door.run(
            self._transaction,
            [
                ("DELETE FROM builders WHERE id = ? OR target_image_id = ?", [target_image_id, target_image_id]),
                ("DELETE FROM provider_images WHERE target_image_id = ?", [target_image_id]),
                ("DELETE FROM target_images WHERE id = ?", [target_image_id]),
            ]
            + outbox_inserts(events),
        )

    def delete_provider_image(self, provider_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._door.run(
            self._transaction,
            [
                ("DELETE FROM builders WHERE id = ?", [provider_image_id]),
                ("DELETE FROM provider_images WHERE id = ?", [provider_image_id]),
            ]
            + outbox_inserts(events),
        )
