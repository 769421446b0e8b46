"""The PostgreSQL store's schema: its versioned migrations, applied at open under a lock.

The tables are SQLite's (``store.sqlite_schema``) with PostgreSQL's types, plus what several
nodes need: ``position`` (the insertion order of builders, images and builds: lists are
oldest first, ties in that order; the builders' keyset paging), the outbox's
claims (``claimed_by``, ``claimed_until``) and ``builder_logs``.  ``schema_version`` holds one
row per migration applied.  Every node runs ``migrate`` at start: one transaction holding an
advisory lock, so that nodes started at once on an empty database wait for the first one
instead of creating the same tables twice.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = [
    "LOCK_CLASS_LOG",
    "LOCK_CLASS_MIGRATION",
    "LOCK_CLASS_OUTBOX",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "migrate",
    "schema_version",
]

#: The first key of the store's advisory locks (the second names what is locked).
LOCK_CLASS_MIGRATION = 0x1F_AC
LOCK_CLASS_LOG = 0x1F_AD
LOCK_CLASS_OUTBOX = 0x1F_AE

#: (version, statements), in order; a later release only appends.  Version 1 is the first
#: schema of this store; version 2 added claims, heartbeats and the logs.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE templates (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, xml TEXT NOT NULL, "
            "created DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE images (id TEXT PRIMARY KEY, template_id TEXT NOT NULL REFERENCES templates(id), "
            "name TEXT NOT NULL, description TEXT, os_name TEXT NOT NULL, os_version TEXT NOT NULL, "
            "os_arch TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, position BIGSERIAL NOT NULL)",
            "CREATE TABLE builds (id TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id), "
            "template_id TEXT NOT NULL REFERENCES templates(id), created DOUBLE PRECISION NOT NULL, "
            "position BIGSERIAL NOT NULL)",
            "CREATE TABLE target_images (id TEXT PRIMARY KEY, build_id TEXT NOT NULL REFERENCES builds(id), "
            "image_id TEXT NOT NULL REFERENCES images(id), target TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE provider_images (id TEXT PRIMARY KEY, "
            "target_image_id TEXT NOT NULL REFERENCES target_images(id), build_id TEXT NOT NULL, "
            "image_id TEXT NOT NULL, provider TEXT NOT NULL, provider_account_identifier TEXT, "
            "created DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE builders (id TEXT PRIMARY KEY, operation TEXT NOT NULL, status TEXT NOT NULL, "
            "completed INTEGER NOT NULL, image_id TEXT NOT NULL, build_id TEXT NOT NULL, target TEXT NOT NULL, "
            "provider TEXT, target_image_id TEXT, provider_account_identifier TEXT, status_detail TEXT, "
            "artifact_path TEXT, artifact_size BIGINT, artifact_sha256 TEXT, identifier_on_provider TEXT, "
            "provider_details TEXT, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, "
            "sequence INTEGER NOT NULL, stages TEXT, position BIGSERIAL NOT NULL UNIQUE)",
            "CREATE INDEX builders_status ON builders(status)",
            # Lists and pages, oldest first: (created, position) is the order and the keyset.
            "CREATE INDEX builders_created ON builders(created, position)",
            "CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, event TEXT NOT NULL, claimed_by TEXT, "
            "claimed_until TIMESTAMPTZ)",
            "CREATE TABLE oauth_nonces (client_key TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expiry DOUBLE PRECISION NOT NULL, PRIMARY KEY (client_key, nonce))",
            "CREATE TABLE manifests (build_id TEXT PRIMARY KEY, packages TEXT NOT NULL)",
        ],
    ),
    (
        2,
        [
            # Claims (see store.IWorkStore): the worker running a builder, its last heartbeat, its starts.
            "ALTER TABLE builders ADD COLUMN worker TEXT",
            "ALTER TABLE builders ADD COLUMN heartbeat DOUBLE PRECISION",
            "ALTER TABLE builders ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            # One row per line; byte_start is the line's offset in the log's UTF-8 text, size its
            # length in bytes with its newline, so a read from any offset finds its first line by index.
            "CREATE TABLE builder_logs (builder_id TEXT NOT NULL, byte_start BIGINT NOT NULL, "
            "size INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY (builder_id, byte_start))",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(connection: psycopg.Connection[Any]) -> int:
    """The version of the database's schema (0 for an empty database)."""
    exists = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(connection: psycopg.Connection[Any], upto: int = SCHEMA_VERSION) -> int:
    """Bring the database to version ``upto`` in one transaction under the migration lock; the version before.

    ``connection`` is a plain (tuple-row) one.  Nodes migrating at once take turns: the
    later ones find the work done.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", [LOCK_CLASS_MIGRATION])
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        before = schema_version(connection)
        for version, statements in MIGRATIONS:
            if before < version <= upto:
                for statement in statements:
                    connection.execute(statement.encode("utf-8"))
                connection.execute("INSERT INTO schema_version (version) VALUES (%s)", [version])
    return before
