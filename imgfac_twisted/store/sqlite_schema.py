"""The SQLite store's schema: the tables and the migrations since the first schema.

The row mapping both SQL stores share is in ``store.rows``.  Plain functions of a
``sqlite3.Connection``, no thread of their own: the store (``store.sqlite``) calls them on its
one database thread.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "migrate_to"]

#: The first version of the schema, as every installation has it (created when missing).
SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, xml TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY, template_id TEXT NOT NULL REFERENCES templates(id),
    name TEXT NOT NULL, description TEXT, os_name TEXT NOT NULL, os_version TEXT NOT NULL,
    os_arch TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id),
    template_id TEXT NOT NULL REFERENCES templates(id), created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS target_images (
    id TEXT PRIMARY KEY, build_id TEXT NOT NULL REFERENCES builds(id),
    image_id TEXT NOT NULL REFERENCES images(id), target TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS provider_images (
    id TEXT PRIMARY KEY, target_image_id TEXT NOT NULL REFERENCES target_images(id),
    build_id TEXT NOT NULL, image_id TEXT NOT NULL, provider TEXT NOT NULL,
    provider_account_identifier TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS builders (
    id TEXT PRIMARY KEY, operation TEXT NOT NULL, status TEXT NOT NULL,
    completed INTEGER NOT NULL, image_id TEXT NOT NULL, build_id TEXT NOT NULL,
    target TEXT NOT NULL, provider TEXT, target_image_id TEXT,
    provider_account_identifier TEXT, status_detail TEXT, artifact_path TEXT,
    artifact_size INTEGER, artifact_sha256 TEXT,
    identifier_on_provider TEXT, provider_details TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    sequence INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS builders_status ON builders(status);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_nonces (
    client_key TEXT NOT NULL, nonce TEXT NOT NULL, expiry REAL NOT NULL, PRIMARY KEY (client_key, nonce));
"""

#: The schema changes since SCHEMA, in order: (version, statements).  A database is
#: brought to the last version at open, each step in one transaction, and its
#: version kept in ``PRAGMA user_version``; a later release only appends here.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        2,
        [
            "ALTER TABLE builders ADD COLUMN stages TEXT",
            # One package list per build (its base image), as JSON [[name, version, arch], ...].
            "CREATE TABLE manifests (build_id TEXT PRIMARY KEY, packages TEXT NOT NULL)",
        ],
    ),
    (
        3,
        [
            # Claims (see store.IWorkStore): the worker running a builder, its last heartbeat, its starts.
            "ALTER TABLE builders ADD COLUMN worker TEXT",
            "ALTER TABLE builders ADD COLUMN heartbeat REAL",
            "ALTER TABLE builders ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            # Pages of the builders list, oldest first (SQLite adds the rowid to the index itself).
            "CREATE INDEX builders_created ON builders(created)",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate_to(version: int, statements: list[str], db: sqlite3.Connection) -> None:
    """One migration step, unless the database has had it (read inside the write transaction:
    another process opening the same file may have migrated it meanwhile)."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= version:
        return
    for statement in statements:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {int(version)}")
