"""The worker's rules on the daemon's core (testing.Stack: SQLite, inline doors, a Clock), jobs handed by hand.

The dispatcher is in work-queue mode (as on PostgreSQL): it records jobs in
the outbox instead of running builders.  The jobs the relay delivered are
taken from the in-process bus and given to ``Worker.take`` the way the AMQP
consumer gives them; the claims are the SQLite store's (the same contract as
PostgreSQL's, tests/integration/test_store_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from twisted.internet.defer import Deferred, ensureDeferred

from imgfac_twisted.events import event_for_change
from imgfac_twisted.jobs.jobs import CredentialSeal
from imgfac_twisted.jobs.worker import Worker
from imgfac_twisted.model import BuilderChange, Status
from imgfac_twisted.testing import SPEC_TEMPLATE, Stack, result_of

KEY = Fernet.generate_key().decode()
HEARTBEAT = 1.0
MOCK_CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>u</username><password>p</password>"
    "</mock_credentials></provider_credentials>"
)


@pytest.fixture
def queued(tmp_path: Path) -> Iterator[Stack]:
    """A stack whose dispatcher hands builders to the work queue, as an API node on PostgreSQL does."""
    stack = Stack(
        str(tmp_path),
        store_url="postgresql://unused@127.0.0.1/db",
        amqp_url="amqp://guest:guest@127.0.0.1/",
        job_key=KEY,
        mock_duration=2.0,
    )
    yield stack
    stack.close()


def make_worker(stack: Stack, name: str, key: str = KEY, max_attempts: int = 2, beating: bool = True) -> Worker:
    """A worker on the stack's core.  Two workers of one test share its BuilderRuns, so only one may
    beat: a heartbeat stops what runs there and is not its own."""
    worker = Worker(
        stack.clock,
        stack.store,
        stack.dispatcher,
        stack.index,
        stack.updater,
        stack.logs,
        CredentialSeal(key),
        worker_id=name,
        heartbeat=HEARTBEAT,
        max_attempts=max_attempts,
        slots=2,
        consume=lambda prefetch, handler, retry: None,
    )
    if beating:
        worker.startService()
    return worker


def jobs(stack: Stack) -> list[dict[str, Any]]:
    """The jobs published so far (events for the default exchange)."""
    return [event.body for event in stack.events if event.exchange == ""]


def build(stack: Stack) -> str:
    started = result_of(ensureDeferred(stack.dispatcher.start_build(SPEC_TEMPLATE, "mock")))
    return started.target_images[0].id


def stored(stack: Stack, builder_id: str) -> Any:
    return result_of(stack.store.get_builder(builder_id))


def test_an_api_node_records_a_job_and_runs_nothing(queued: Stack) -> None:
    """With a work queue, a new builder stays NEW here and one job names it."""
    builder_id = build(queued)
    queued.run_for(3)
    assert stored(queued, builder_id).status == Status.NEW
    assert [(job["job"], job["builder_id"], job["builder_ids"]) for job in jobs(queued)] == [
        ("build", builder_id, [builder_id])
    ]


def test_a_job_runs_its_builder_and_is_acknowledged_once_it_is_stored_completed(queued: Stack) -> None:
    builder_id = build(queued)
    worker = make_worker(queued, "w1")
    taken = worker.take(jobs(queued)[0])
    queued.run_for(1)
    assert not taken.called, "not acknowledged while it runs"
    queued.run_for(3)
    assert result_of(taken) is True
    done = stored(queued, builder_id)
    assert (done.status, done.worker) == (Status.COMPLETED, "w1")


def test_a_job_whose_builder_another_live_worker_runs_is_held_until_it_ends(queued: Stack) -> None:
    builder_id = build(queued)
    first, second = make_worker(queued, "w1"), make_worker(queued, "w2", beating=False)
    job = jobs(queued)[0]
    running = first.take(job)
    held = second.take(job)
    queued.run_for(1)
    assert not held.called
    queued.run_for(4)
    assert result_of(running) is True and result_of(held) is True
    assert stored(queued, builder_id).worker == "w1"


def test_a_builder_whose_worker_stopped_answering_is_started_again(queued: Stack) -> None:
    builder_id = build(queued)
    result_of(queued.store.claim_builders([builder_id], "dead", queued.clock.seconds(), -1.0, 2))
    queued.run_for(3 * HEARTBEAT + 0.5)
    worker = make_worker(queued, "w2")
    taken = worker.take(jobs(queued)[0])
    queued.run_for(4)
    assert result_of(taken) is True
    done = stored(queued, builder_id)
    assert (done.status, done.worker) == (Status.COMPLETED, "w2")
    log = result_of(queued.logs.read(builder_id)).decode()
    assert "started again on worker w2 (attempt 2 of 2)" in log


def test_a_builder_out_of_attempts_is_failed_with_the_reason(queued: Stack) -> None:
    builder_id = build(queued)
    result_of(queued.store.claim_builders([builder_id], "dead", queued.clock.seconds(), -1.0, 1))
    queued.run_for(3 * HEARTBEAT + 0.5)
    worker = make_worker(queued, "w2", max_attempts=1)
    assert result_of(worker.take(jobs(queued)[0])) is True
    failed = stored(queued, builder_id)
    assert failed.status == Status.FAILED
    assert failed.status_detail == "its worker dead stopped answering, and it was started 1 times (max_attempts 1)"


def test_a_builder_cancelled_elsewhere_stops_here_without_a_second_record(queued: Stack) -> None:
    builder_id = build(queued)
    worker = make_worker(queued, "w1")
    taken = worker.take(jobs(queued)[0])
    queued.run_for(1)
    assert queued.dispatcher.runs.running_ids() == [builder_id]
    # Another node records the cancel in the store; this worker hears of it (the events or its heartbeat).
    running = stored(queued, builder_id)
    cancelled = running.moved(Status.FAILED, now=queued.clock.seconds(), status_detail="cancelled by a client")
    change = event_for_change(BuilderChange(old=running, new=cancelled), queued.clock.seconds())
    result_of(queued.store.save_builder(cancelled, Status.BUILDING, change))
    worker.ended_elsewhere(cancelled)
    queued.run_for(5)
    assert queued.dispatcher.runs.running_ids() == []
    assert result_of(taken) is True, "acknowledged: the store says it ended"
    final = stored(queued, builder_id)
    assert (final.status_detail, final.sequence) == ("cancelled by a client", cancelled.sequence)


def test_the_heartbeat_stops_a_builder_that_is_no_longer_this_worker_s(queued: Stack) -> None:
    builder_id = build(queued)
    worker = make_worker(queued, "w1")
    worker.take(jobs(queued)[0])
    queued.run_for(0.5)
    # Taken over by another worker behind this one's back.
    result_of(queued.store.claim_builders([builder_id], "w2", queued.clock.seconds(), queued.clock.seconds() + 1, 2))
    queued.run_for(HEARTBEAT + 0.1)
    assert queued.dispatcher.runs.running_ids() == []


def test_a_stopping_worker_hands_its_builders_back(queued: Stack) -> None:
    builder_id = build(queued)
    worker = make_worker(queued, "w1")
    taken = worker.take(jobs(queued)[0])
    queued.run_for(0.5)
    stopped: Deferred[None] = worker.stopService()
    queued.run_for(1)
    assert stopped.called
    assert result_of(taken) is False, "not acknowledged: the broker gives the job to another worker"
    again = stored(queued, builder_id)
    assert again.worker is None and not again.status.is_final


def test_a_push_job_carries_its_credentials_sealed_and_the_worker_opens_them(queued: Stack) -> None:
    target_id = build(queued)
    worker = make_worker(queued, "w1")
    first = worker.take(jobs(queued)[0])
    queued.run_for(4)
    assert result_of(first) is True
    pushed = result_of(ensureDeferred(queued.dispatcher.start_push(target_id, "mock", MOCK_CREDENTIALS)))
    job = jobs(queued)[-1]
    assert job["job"] == "push" and "<password>" not in str(job)
    assert CredentialSeal(KEY).open(job["credentials"]).secrets == {"password": "p"}
    taken = worker.take(job)
    queued.run_for(4)
    assert result_of(taken) is True
    assert stored(queued, pushed.id).status == Status.COMPLETED


def test_credentials_sealed_with_another_key_fail_the_push_saying_why(queued: Stack) -> None:
    target_id = build(queued)
    worker = make_worker(queued, "w1")
    first = worker.take(jobs(queued)[0])
    queued.run_for(4)
    assert result_of(first) is True
    other = make_worker(queued, "w2", key=Fernet.generate_key().decode(), beating=False)
    pushed = result_of(ensureDeferred(queued.dispatcher.start_push(target_id, "mock", MOCK_CREDENTIALS)))
    assert result_of(other.take(jobs(queued)[-1])) is True
    failed = stored(queued, pushed.id)
    assert failed.status == Status.FAILED
    assert "every node needs the same job_key" in failed.status_detail
