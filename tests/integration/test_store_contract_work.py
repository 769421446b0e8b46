"""The store contract, claims and heartbeats (``IWorkStore``): run against SQLiteStore and PostgresStore like
test_store_contract.py, whose fixtures and helpers it shares."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_store_contract import MakeStore, Store, move, record_builders, record_one_build, record_one_push

from imgfac_twisted.model import Status
from imgfac_twisted.store import ClaimOutcome
from imgfac_twisted.testing import result_of


@pytest.fixture
def store(store_factory: MakeStore) -> Store:
    """One open store."""
    return store_factory()


def test_claims_find_each_outcome(store: Store) -> None:
    """Unclaimed: CLAIMED (worker, heartbeat, one attempt); again: OURS; another worker while fresh: TAKEN;
    final: FINAL; unknown: GONE."""
    image, build, target_image, builder = record_one_build(store)
    _, push = record_one_push(store, image, build, target_image)
    move(store, push, Status.FAILED, status_detail="no")
    claims = result_of(store.claim_builders([builder.id, "pi", "gone"], "w1", 100.0, 50.0, 2))
    assert {key: claim.outcome for key, claim in claims.items()} == {
        builder.id: ClaimOutcome.CLAIMED,
        "pi": ClaimOutcome.FINAL,
        "gone": ClaimOutcome.GONE,
    }
    assert claims[builder.id].attempts == 1 and claims[builder.id].builder.worker == "w1"
    assert claims["gone"].builder is None
    again = result_of(store.claim_builders([builder.id], "w1", 101.0, 50.0, 2))[builder.id]
    assert (again.outcome, again.attempts) == (ClaimOutcome.OURS, 1)
    taken = result_of(store.claim_builders([builder.id], "w2", 102.0, 90.0, 2))[builder.id]
    assert (taken.outcome, taken.builder.worker) == (ClaimOutcome.TAKEN, "w1")


def test_a_stale_claim_is_taken_over_until_attempts_run_out(store: Store) -> None:
    """A worker whose heartbeat is older than ``stale_before`` loses the builder to the next claim (one more
    attempt); once ``max_attempts`` starts were made the claim is EXHAUSTED and changes nothing."""
    *_, builder = record_one_build(store)
    result_of(store.claim_builders([builder.id], "w1", 100.0, 0.0, 2))
    over = result_of(store.claim_builders([builder.id], "w2", 200.0, 150.0, 2))[builder.id]
    assert (over.outcome, over.attempts, over.builder.worker) == (ClaimOutcome.CLAIMED, 2, "w2")
    spent = result_of(store.claim_builders([builder.id], "w3", 300.0, 250.0, 2))[builder.id]
    assert (spent.outcome, spent.attempts, spent.builder.worker) == (ClaimOutcome.EXHAUSTED, 2, "w2")
    assert result_of(store.get_builder(builder.id)).worker == "w2"


def test_two_concurrent_claims_of_one_builder_make_one_claimed(store_factory: MakeStore) -> None:
    """Two nodes claiming the same builders at the same instant: each builder is CLAIMED by exactly one."""
    first, second = store_factory(), store_factory()
    builders = record_builders(first, 20)
    ids = [b.id for b in builders]
    start = threading.Barrier(2)

    def claim(store: Store, worker: str) -> dict[str, Any]:
        start.wait()
        return dict(result_of(store.claim_builders(ids, worker, 100.0, 50.0, 2)))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(claim, [first, second], ["w1", "w2"]))
    for builder_id in ids:
        outcomes = sorted(result[builder_id].outcome.value for result in results)
        assert outcomes == ["claimed", "taken"], builder_id
    holders = {b.id: b.worker for b in result_of(first.list_builders())}
    for builder_id in ids:
        winner = next(w for w, r in zip(["w1", "w2"], results) if r[builder_id].outcome is ClaimOutcome.CLAIMED)
        assert holders[builder_id] == winner


def test_heartbeat_keeps_claims_fresh_and_names_the_lost_ones(store: Store) -> None:
    """A heartbeat refreshes the worker's unfinished builders; it names those ended, taken over or deleted."""
    image, build, target_image, builder = record_one_build(store)
    _, push = record_one_push(store, image, build, target_image)
    result_of(store.claim_builders([builder.id, "pi"], "w1", 100.0, 0.0, 2))
    assert result_of(store.heartbeat([builder.id, "pi"], "w1", 200.0)) == []
    fresh = result_of(store.claim_builders([builder.id], "w2", 201.0, 150.0, 2))[builder.id]
    assert fresh.outcome is ClaimOutcome.TAKEN, "the heartbeat at 200 is newer than stale_before 150"
    move(store, push, Status.FAILED, status_detail="cancelled")
    assert result_of(store.heartbeat([builder.id, "pi", "gone"], "w1", 300.0)) == ["pi", "gone"]
    over = result_of(store.claim_builders([builder.id], "w2", 500.0, 400.0, 3))[builder.id]
    assert over.outcome is ClaimOutcome.CLAIMED
    assert result_of(store.heartbeat([builder.id], "w1", 501.0)) == [builder.id]
    assert result_of(store.heartbeat([], "w1", 501.0)) == []


def test_released_builders_are_claimed_again_with_their_attempt_given_back(store: Store) -> None:
    """A stopping worker's builders lose their worker and one attempt, keep their status, and the next claim
    takes them at once; builders of another worker are left alone."""
    *_, builder = record_one_build(store)
    building = move(store, move(store, builder, Status.PENDING), Status.BUILDING)
    result_of(store.claim_builders([builder.id], "w1", 100.0, 0.0, 2))
    result_of(store.release_builders([builder.id], "w2"))
    assert result_of(store.get_builder(builder.id)).worker == "w1", "not w2's to release"
    result_of(store.release_builders([builder.id], "w1"))
    released = result_of(store.get_builder(builder.id))
    assert (released.worker, released.status) == (None, building.status)
    again = result_of(store.claim_builders([builder.id], "w2", 101.0, 0.0, 2))[builder.id]
    assert (again.outcome, again.attempts) == (ClaimOutcome.CLAIMED, 1)
    result_of(store.release_builders([], "w2"))
    move(store, result_of(store.get_builder(builder.id)), Status.FAILED, status_detail="stopped")
    result_of(store.release_builders([builder.id], "w2"))
    assert result_of(store.get_builder(builder.id)).worker == "w2", "an ended builder keeps the worker that ran it"
