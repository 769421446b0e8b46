"""What the SQL stores share: how model objects become rows and rows model objects, and the
statements that are the same on SQLite and PostgreSQL.

Statements are written with ``?`` placeholders (SQLite's); the PostgreSQL store turns them into
``%s`` (``store.postgres``).  Rows are read by column name (``sqlite3.Row`` and psycopg's
``dict_row`` both allow it), so every aggregate is named (``AS n``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from ..events import Event
from ..model import (
    FINAL_STATUSES,
    Build,
    Builder,
    Image,
    Operation,
    ProviderImage,
    Stage,
    StageName,
    Status,
    StoredTemplate,
    TargetImage,
)

__all__ = [
    "FINALS",
    "TABLES",
    "UNFINISHED",
    "Db",
    "Statement",
    "builder_update",
    "columns",
    "decode_stages",
    "deletions",
    "encode_stages",
    "from_row",
    "insert_sql",
    "marks",
    "outbox_inserts",
    "row_values",
]

T = TypeVar("T")

#: One statement and its parameters.
Statement = tuple[str, list[Any]]

#: The final statuses' values, as stored.
FINALS = sorted(status.value for status in FINAL_STATUSES)
#: The other statuses' values: "unfinished" is asked as ``status IN (...)``, which the status index serves.
UNFINISHED = sorted(status.value for status in Status if status not in FINAL_STATUSES)

TABLES: dict[type, str] = {
    StoredTemplate: "templates",
    Image: "images",
    Build: "builds",
    TargetImage: "target_images",
    ProviderImage: "provider_images",
    Builder: "builders",
}


class Db(Protocol):
    """A connection as the shared statements use it: ``execute`` with ``?`` placeholders, rows by name."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any:
        """Run one statement; return its cursor (``fetchone``, ``fetchall``, ``rowcount``)."""


def marks(count: int) -> str:
    """``?, ?, ...``: the placeholders of an ``IN (...)`` list of ``count`` values."""
    return ", ".join("?" * count)


def columns(kind: type) -> list[str]:
    """The column names of a model class: its dataclass fields, in order."""
    return list(_columns(kind))


@functools.cache
def _columns(kind: type) -> tuple[str, ...]:
    # Asked once per row read: dataclasses.fields is too slow for that (100,000 builders: 2 s).
    return tuple(field.name for field in dataclasses.fields(kind))


def row_values(obj: Any) -> list[Any]:
    """The column values of a model object, enums stored as their strings, stages as JSON."""
    values = []
    for name in columns(type(obj)):
        value = getattr(obj, name)
        if isinstance(value, (Status, Operation)):
            value = value.value
        elif name == "stages":
            value = encode_stages(value)
        values.append(value)
    return values


def encode_stages(stages: tuple[Stage, ...]) -> str | None:
    """A builder's stages as stored: JSON ``[[name, started_at, ended_at], ...]`` (None for none)."""
    if not stages:
        return None
    return json.dumps([[stage.name.value, stage.started_at, stage.ended_at] for stage in stages])


def decode_stages(text: str | None) -> tuple[Stage, ...]:
    """The stages ``encode_stages`` wrote."""
    if not text:
        return ()
    return tuple(Stage(StageName(name), started, ended) for name, started, ended in json.loads(text))


def from_row(kind: type[T], row: Mapping[str, Any]) -> T:
    """The model object of class ``kind`` that a row holds (enums and stages decoded)."""
    values = {name: row[name] for name in _columns(cast(type, kind))}
    if kind is Builder:
        values["status"] = Status(values["status"])
        values["operation"] = Operation(values["operation"])
        values["stages"] = decode_stages(values["stages"])
    return kind(**values)


def insert_sql(kind: type) -> str:
    """The INSERT statement for one object of model class ``kind``."""
    names = columns(kind)
    return f"INSERT INTO {TABLES[kind]} ({', '.join(names)}) VALUES ({marks(len(names))})"


def outbox_inserts(events: Sequence[Event]) -> list[Statement]:
    """The statements that put ``events`` in the outbox (run in the same transaction as the change)."""
    return [("INSERT INTO outbox (event) VALUES (?)", [event.to_json()]) for event in events]


def builder_update(builder: Builder, expected_status: Status) -> Statement:
    """The guarded UPDATE that writes ``builder`` if its stored status is still ``expected_status``.

    Every column but ``id`` and ``worker`` (only a claim sets the worker).
    """
    names = [name for name in columns(Builder) if name not in ("id", "worker")]
    values = dict(zip(columns(Builder), row_values(builder)))
    assignments = ", ".join(f"{name} = ?" for name in names)
    return (
        f"UPDATE builders SET {assignments} WHERE id = ? AND status = ?",
        [values[name] for name in names] + [builder.id, expected_status.value],
    )


#: What goes with each kind of deletion, children before parents (the foreign keys are enforced):
#: (table, the condition naming the rows, given the deleted object's id once per ``?``).
_DELETIONS: dict[str, list[tuple[str, str]]] = {
    "image": [
        ("manifests", "build_id IN (SELECT id FROM builds WHERE image_id = ?)"),
        ("builders", "image_id = ?"),
        ("provider_images", "image_id = ?"),
        ("target_images", "image_id = ?"),
        ("builds", "image_id = ?"),
        ("images", "id = ?"),
    ],
    "build": [
        ("builders", "build_id = ?"),
        ("provider_images", "build_id = ?"),
        ("target_images", "build_id = ?"),
        ("builds", "id = ?"),
        ("manifests", "build_id = ?"),
    ],
    "target_image": [
        ("builders", "id = ? OR target_image_id = ?"),
        ("provider_images", "target_image_id = ?"),
        ("target_images", "id = ?"),
    ],
    "provider_image": [
        ("builders", "id = ?"),
        ("provider_images", "id = ?"),
    ],
}


def deletions(kind: str, object_id: str, events: Sequence[Event], logs: bool = False) -> list[Statement]:
    """The statements of one deletion (``kind``: image, build, target_image, provider_image) and its events.

    With ``logs``, the builders' logs (table ``builder_logs``) go first, with their builders.
    """
    statements: list[Statement] = []
    for table, condition in _DELETIONS[kind]:
        values = [object_id] * condition.count("?")
        if logs and table == "builders":
            statements.append(
                (f"DELETE FROM builder_logs WHERE builder_id IN (SELECT id FROM builders WHERE {condition})", values)
            )
        statements.append((f"DELETE FROM {table} WHERE {condition}", values))
    return statements + outbox_inserts(events)
