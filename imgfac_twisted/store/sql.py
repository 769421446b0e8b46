"""The IStore and IWorkStore methods both SQL stores run the same way, through their door.

A store subclasses ``SqlStore`` and gives it a connection (``_db``), transactions
(``_in_transaction``), the ordering of its lists (``ORDER``: oldest first, ties in insertion
order) and how a claim locks the rows it reads (``LOCK_ROWS``).  Every ``thd_*`` method blocks
and runs on the door's threads (or before the reactor starts); the others return Deferreds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred

from ..doors import IDoor
from ..errors import InvalidTransition, UnknownObject
from ..events import Event
from ..model import Build, Builder, Image, ProviderImage, Status, StoredTemplate, TargetImage, new_id
from . import Claim
from .claims import claim_all, heartbeat_all, release_all
from .rows import (
    TABLES,
    UNFINISHED,
    Db,
    Statement,
    builder_update,
    deletions,
    from_row,
    insert_sql,
    marks,
    outbox_inserts,
    row_values,
)

__all__ = ["SqlStore"]

T = TypeVar("T")


class SqlStore:
    """What the SQLite and PostgreSQL stores share; see the module's docstring for what a subclass gives."""

    #: The ORDER BY of every list, oldest first (an index serves it on ``builders``).
    ORDER: ClassVar[str]
    #: What ends a claim's SELECT to lock the rows it reads ("" where the transaction locks everything).
    LOCK_ROWS: ClassVar[str] = ""
    #: The name of the builders' ordering column after ``created`` (keyset paging).
    TIEBREAK: ClassVar[str]
    #: Whether builders' logs live in the store (``ILogStore``); deletions then remove them too.
    keeps_logs: ClassVar[bool] = False

    _door: IDoor

    def _db(self) -> Db:
        """The calling thread's connection."""
        raise NotImplementedError

    def _in_transaction(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in one transaction: all of it is committed, or none."""
        raise NotImplementedError

    def _append_log_in(self, db: Db, builder_id: str, lines: Sequence[str]) -> None:
        """Append log lines inside a transaction (only a store that ``keeps_logs`` does)."""

    # -- helpers -----------------------------------------------------------

    def _transaction(self, statements: list[Statement]) -> None:
        def execute_all(db: Db) -> None:
            for sql, values in statements:
                db.execute(sql, values)

        self._in_transaction(execute_all)

    def _run(self, statements: list[Statement]) -> Deferred[None]:
        return self._door.run(self._transaction, statements)

    @staticmethod
    def _inserts(objects: Iterable[Any]) -> list[Statement]:
        return [(insert_sql(type(obj)), row_values(obj)) for obj in objects]

    def _get(self, kind: type[T], object_id: str, what: str) -> T:
        row = self._db().execute(f"SELECT * FROM {TABLES[kind]} WHERE id = ?", [object_id]).fetchone()
        if row is None:
            raise UnknownObject(f"no {what} with id {object_id!r}")
        return from_row(kind, row)

    # -- templates and records ---------------------------------------------

    def add_template(self, xml: str, now: float) -> Deferred[StoredTemplate]:
        return self._door.run(self.thd_add_template, xml, now)

    def thd_add_template(self, xml: str, now: float) -> StoredTemplate:
        """Keep ``xml`` once per distinct text (two nodes adding it at once keep one)."""
        digest = hashlib.sha256(xml.encode("utf-8")).hexdigest()

        def keep(db: Db) -> StoredTemplate:
            db.execute(
                "INSERT INTO templates (id, sha256, xml, created) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                [new_id(), digest, xml, now],
            )
            return from_row(StoredTemplate, db.execute("SELECT * FROM templates WHERE sha256 = ?", [digest]).fetchone())

        return self._in_transaction(keep)

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
        return self._run(self._inserts(objects) + outbox_inserts(events))

    def record_push(self, provider_image: ProviderImage, builder: Builder, events: list[Event]) -> Deferred[None]:
        return self._run(self._inserts([provider_image, builder]) + outbox_inserts(events))

    def add_to_build(
        self, target_images: list[TargetImage], builders: list[Builder], events: list[Event]
    ) -> Deferred[None]:
        return self._run(self._inserts([*target_images, *builders]) + outbox_inserts(events))

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
        return self._run(self._inserts(objects) + outbox_inserts(events))

    def save_builder(
        self, builder: Builder, expected_status: Status, event: Event, log_lines: Sequence[str] = ()
    ) -> Deferred[None]:
        return self._door.run(self.thd_save_builder, builder, expected_status, event, tuple(log_lines))

    def thd_save_builder(
        self, builder: Builder, expected_status: Status, event: Event, log_lines: Sequence[str] = ()
    ) -> None:
        """The guarded write of ``builder``, its event and (where the store keeps logs) its log lines."""
        sql, values = builder_update(builder, expected_status)

        def guarded_update(db: Db) -> None:
            if db.execute(sql, values).rowcount != 1:
                raise InvalidTransition(
                    f"builder {builder.id} is no longer {expected_status.value}: another writer moved it"
                )
            for insert, row in outbox_inserts([event]):
                db.execute(insert, row)
            if log_lines:
                self._append_log_in(db, builder.id, log_lines)

        self._in_transaction(guarded_update)

    # -- the outbox and nonces ---------------------------------------------

    def delete_events(self, outbox_ids: list[int]) -> Deferred[None]:
        if not outbox_ids:
            return self._run([])
        return self._run([(f"DELETE FROM outbox WHERE id IN ({marks(len(outbox_ids))})", list(outbox_ids))])

    def count_pending_events(self) -> Deferred[int]:
        return self._door.run(lambda: int(self._db().execute("SELECT COUNT(*) AS n FROM outbox").fetchone()["n"]))

    def spend_nonce(self, client_key: str, nonce: str, expiry: float, now: float) -> Deferred[None]:
        """Record an OAuth nonce as spent until ``expiry``; forget those expired before ``now``."""
        return self._run(
            [
                (
                    "INSERT INTO oauth_nonces (client_key, nonce, expiry) VALUES (?, ?, ?) "
                    "ON CONFLICT (client_key, nonce) DO UPDATE SET expiry = excluded.expiry",
                    [client_key, nonce, expiry],
                ),
                ("DELETE FROM oauth_nonces WHERE expiry < ?", [now]),
            ]
        )

    def claim_nonce(self, client_key: str, nonce: str, expiry: float, now: float) -> Deferred[bool]:
        """Record an OAuth nonce as spent until ``expiry`` unless it is already; fire True when this was its
        first use (forgetting those expired before ``now``)."""
        return self._door.run(self._in_transaction, lambda db: self._claim_nonce(db, client_key, nonce, expiry, now))

    @staticmethod
    def _claim_nonce(db: Db, client_key: str, nonce: str, expiry: float, now: float) -> bool:
        db.execute("DELETE FROM oauth_nonces WHERE expiry < ?", [now])
        inserted = db.execute(
            "INSERT INTO oauth_nonces (client_key, nonce, expiry) VALUES (?, ?, ?) "
            "ON CONFLICT (client_key, nonce) DO NOTHING RETURNING client_key",
            [client_key, nonce, expiry],
        ).fetchone()
        return inserted is not None

    def thd_spent_nonces(self, now: float) -> list[tuple[str, str, float]]:
        """The OAuth nonces spent and not expired at ``now`` (blocking: for start-up, before the reactor runs)."""
        rows = self._db().execute("SELECT client_key, nonce, expiry FROM oauth_nonces WHERE expiry >= ?", [now])
        return [(row["client_key"], row["nonce"], row["expiry"]) for row in rows.fetchall()]

    # -- manifests -----------------------------------------------------------

    def save_manifest(self, build_id: str, packages: Sequence[tuple[str, str, str]]) -> Deferred[None]:
        return self._run(
            [
                (
                    "INSERT INTO manifests (build_id, packages) VALUES (?, ?) "
                    "ON CONFLICT (build_id) DO UPDATE SET packages = excluded.packages",
                    [build_id, json.dumps([list(package) for package in packages])],
                )
            ]
        )

    def get_manifest(self, build_id: str) -> Deferred[list[tuple[str, str, str]] | None]:
        return self._door.run(self.thd_get_manifest, build_id)

    def thd_get_manifest(self, build_id: str) -> list[tuple[str, str, str]] | None:
        row = self._db().execute("SELECT packages FROM manifests WHERE build_id = ?", [build_id]).fetchone()
        if row is None:
            return None
        return [(name, version, arch) for name, version, arch in json.loads(row["packages"])]

    # -- reads -----------------------------------------------------------------

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
        """Up to ``limit`` builders after ``marker``, oldest first (keyset paging on the ordering index)."""
        if marker is None:
            return self._select_builders("1 = 1", [], limit)
        key = f"created, {self.TIEBREAK}"
        row = self._db().execute(f"SELECT {key} AS tiebreak FROM builders WHERE id = ?", [marker]).fetchone()
        if row is None:
            raise UnknownObject(f"no builder with id {marker!r}")
        return self._select_builders(f"({key}) > (?, ?)", [row["created"], row["tiebreak"]], limit)

    def count_builders(self) -> Deferred[dict[tuple[str, str], int]]:
        return self._door.run(self.thd_count_builders)

    def thd_count_builders(self) -> dict[tuple[str, str], int]:
        rows = self._db().execute("SELECT operation, status, COUNT(*) AS n FROM builders GROUP BY operation, status")
        return {(row["operation"], row["status"]): int(row["n"]) for row in rows.fetchall()}

    def list_unfinished_builders(self) -> Deferred[list[Builder]]:
        return self._door.run(self.thd_list_unfinished_builders)

    def thd_list_unfinished_builders(self) -> list[Builder]:
        """Every builder whose status is not final, oldest first (blocking: for start-up)."""
        return self._select_builders(f"status IN ({marks(len(UNFINISHED))})", list(UNFINISHED))

    def _select_builders(self, where: str, values: list[Any], limit: int | None = None) -> list[Builder]:
        page = "" if limit is None else f" LIMIT {max(int(limit), 0)}"
        rows = self._db().execute(f"SELECT * FROM builders WHERE {where} ORDER BY {self.ORDER}{page}", values)
        return [from_row(Builder, row) for row in rows.fetchall()]

    def list_images(self) -> Deferred[list[Image]]:
        return self._door.run(self._select_all, Image)

    def list_builds(self) -> Deferred[list[Build]]:
        return self._door.run(self._select_all, Build)

    def _select_all(self, kind: type[T]) -> list[T]:
        rows = self._db().execute(f"SELECT * FROM {TABLES[kind]} ORDER BY {self.ORDER}")
        return [from_row(kind, row) for row in rows.fetchall()]

    # -- deletions ---------------------------------------------------------------

    def delete_image(self, image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._run(deletions("image", image_id, events, logs=self.keeps_logs))

    def delete_build(self, build_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._run(deletions("build", build_id, events, logs=self.keeps_logs))

    def delete_target_image(self, target_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._run(deletions("target_image", target_image_id, events, logs=self.keeps_logs))

    def delete_provider_image(self, provider_image_id: str, events: Sequence[Event] = ()) -> Deferred[None]:
        return self._run(deletions("provider_image", provider_image_id, events, logs=self.keeps_logs))

    # -- IWorkStore ----------------------------------------------------------------

    def claim_builders(
        self, builder_ids: Sequence[str], worker_id: str, now: float, stale_before: float, max_attempts: int
    ) -> Deferred[dict[str, Claim]]:
        def claim(db: Db) -> dict[str, Claim]:
            return claim_all(db, self.LOCK_ROWS, builder_ids, worker_id, now, stale_before, max_attempts)

        return self._door.run(self._in_transaction, claim)

    def heartbeat(self, builder_ids: Sequence[str], worker_id: str, now: float) -> Deferred[list[str]]:
        ids = list(builder_ids)
        return self._door.run(self._in_transaction, lambda db: heartbeat_all(db, self.LOCK_ROWS, ids, worker_id, now))

    def release_builders(self, builder_ids: Sequence[str], worker_id: str) -> Deferred[None]:
        ids = list(builder_ids)
        return self._door.run(self._in_transaction, lambda db: release_all(db, self.LOCK_ROWS, ids, worker_id))
