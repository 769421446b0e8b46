"""Claims and heartbeats (``IWorkStore``) as statements both SQL stores run in one transaction.

The rows a claim reads are locked first: ``FOR UPDATE`` on PostgreSQL, the whole database on
SQLite (``BEGIN IMMEDIATE``), so two workers claiming one builder see each other's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..model import Builder, Status
from . import Claim, ClaimOutcome
from .rows import FINALS, Db, from_row, marks

__all__ = ["claim_all", "heartbeat_all", "outcome_of", "release_all"]


def outcome_of(row: Mapping[str, Any], worker_id: str, stale_before: float, max_attempts: int) -> ClaimOutcome:
    """What claiming the builder stored in ``row`` comes to (see ``IWorkStore.claim_builders``)."""
    if Status(row["status"]).is_final:
        return ClaimOutcome.FINAL
    if row["worker"] == worker_id:
        return ClaimOutcome.OURS
    if row["worker"] is None:
        return ClaimOutcome.CLAIMED
    # A worker that never beat is as stale as one that stopped beating.
    if row["heartbeat"] is not None and row["heartbeat"] >= stale_before:
        return ClaimOutcome.TAKEN
    if row["attempts"] >= max_attempts:
        return ClaimOutcome.EXHAUSTED
    return ClaimOutcome.CLAIMED


def claim_all(
    db: Db,
    lock_rows: str,
    builder_ids: Sequence[str],
    worker_id: str,
    now: float,
    stale_before: float,
    max_attempts: int,
) -> dict[str, Claim]:
    """Claim each builder for ``worker_id`` (inside the caller's transaction); each one's Claim.

    ``lock_rows`` ends the SELECT that reads them (``" FOR UPDATE"`` or nothing).
    """
    claims = {builder_id: Claim(ClaimOutcome.GONE, None, 0) for builder_id in builder_ids}
    if not builder_ids:
        return claims
    # Locked in id order, so that two claims of overlapping sets cannot deadlock.
    rows = db.execute(
        f"SELECT * FROM builders WHERE id IN ({marks(len(builder_ids))}) ORDER BY id{lock_rows}", list(builder_ids)
    ).fetchall()
    for row in rows:
        outcome = outcome_of(row, worker_id, stale_before, max_attempts)
        builder, attempts = from_row(Builder, row), int(row["attempts"])
        if outcome is ClaimOutcome.CLAIMED:
            attempts += 1
            db.execute(
                "UPDATE builders SET worker = ?, heartbeat = ?, attempts = ? WHERE id = ?",
                [worker_id, now, attempts, builder.id],
            )
            builder = replace(builder, worker=worker_id)
        elif outcome is ClaimOutcome.OURS:
            db.execute("UPDATE builders SET heartbeat = ? WHERE id = ?", [now, builder.id])
        claims[builder.id] = Claim(outcome, builder, attempts)
    return claims


def _held(db: Db, lock_rows: str, builder_ids: Sequence[str], worker_id: str) -> list[str]:
    """The ids of those builders ``worker_id`` holds and that have not ended, their rows locked in id order
    (as a claim locks them, so that a heartbeat and a claim of the same builders cannot deadlock)."""
    where = f"id IN ({marks(len(builder_ids))}) AND worker = ? AND status NOT IN ({marks(len(FINALS))})"
    rows = db.execute(
        f"SELECT id FROM builders WHERE {where} ORDER BY id{lock_rows}", [*builder_ids, worker_id, *FINALS]
    )
    return [row["id"] for row in rows.fetchall()]


def heartbeat_all(db: Db, lock_rows: str, builder_ids: Sequence[str], worker_id: str, now: float) -> list[str]:
    """Beat for the builders still ``worker_id``'s and not final; the others' ids, in the order given."""
    if not builder_ids:
        return []
    held = _held(db, lock_rows, builder_ids, worker_id)
    if held:
        db.execute(f"UPDATE builders SET heartbeat = ? WHERE id IN ({marks(len(held))})", [now, *held])
    beating = set(held)
    return [builder_id for builder_id in builder_ids if builder_id not in beating]


def release_all(db: Db, lock_rows: str, builder_ids: Sequence[str], worker_id: str) -> None:
    """Hand ``worker_id``'s unfinished builders among ``builder_ids`` back: no worker, no heartbeat, one attempt
    less.  An ended builder keeps its worker: the node that ran it."""
    if not builder_ids:
        return
    held = _held(db, lock_rows, builder_ids, worker_id)
    if held:
        db.execute(
            "UPDATE builders SET worker = NULL, heartbeat = NULL, "
            "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
            f"WHERE id IN ({marks(len(held))})",
            held,
        )
