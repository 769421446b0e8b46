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


def heartbeat_all(db: Db, builder_ids: Sequence[str], worker_id: str, now: float) -> list[str]:
    """Beat for the builders still ``worker_id``'s and not final; the others' ids, in the order given."""
    if not builder_ids:
        return []
    where = f"id IN ({marks(len(builder_ids))}) AND worker = ? AND status NOT IN ({marks(len(FINALS))})"
    values = [*builder_ids, worker_id, *FINALS]
    held = {row["id"] for row in db.execute(f"SELECT id FROM builders WHERE {where}", values).fetchall()}
    db.execute(f"UPDATE builders SET heartbeat = ? WHERE {where}", [now, *values])
    return [builder_id for builder_id in builder_ids if builder_id not in held]


def release_all(db: Db, builder_ids: Sequence[str], worker_id: str) -> None:
    """Hand ``worker_id``'s builders among ``builder_ids`` back: no worker, no heartbeat, one attempt less."""
    if not builder_ids:
        return
    db.execute(
        "UPDATE builders SET worker = NULL, heartbeat = NULL, "
        "attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END "
        f"WHERE id IN ({marks(len(builder_ids))}) AND worker = ?",
        [*builder_ids, worker_id],
    )
