"""The Deferred helpers: observe, settle, Wakeup and InFlight."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from imgfac_twisted.deferreds import InFlight, Wakeup, observe, settle
from imgfac_twisted.testing import result_of


def test_observe_fires_with_none_and_leaves_the_result() -> None:
    """observe fires once the other Deferred ends, which keeps its result for its own callbacks."""
    work: Deferred[str] = Deferred()
    ended = observe(work)
    assert not ended.called
    work.callback("done")
    assert result_of(ended) is None
    assert result_of(work) == "done"


def test_observe_of_a_failure_fires_with_none_and_leaves_the_failure() -> None:
    """A failure is not taken by the observer: the Deferred still fails for its owner."""
    work: Deferred[str] = Deferred()
    ended = observe(work)
    work.errback(ValueError("broken"))
    assert result_of(ended) is None
    with pytest.raises(ValueError):
        result_of(work)


def test_cancelling_the_observer_leaves_the_work_running() -> None:
    """Cancelling the wait does not cancel what is waited for."""
    work: Deferred[str] = Deferred()
    ended = observe(work)
    ended.cancel()
    assert not work.called
    with pytest.raises(CancelledError):
        result_of(ended)
    work.callback("later")
    assert result_of(work) == "later"


def test_settle_fires_once() -> None:
    """settle fires a Deferred the first time only; later results are dropped."""
    waiter: Deferred[int] = Deferred()
    settle(waiter, 1)
    settle(waiter, 2)
    settle(waiter, Failure(ValueError("late")))
    assert result_of(waiter) == 1


def test_settle_with_a_failure_errbacks() -> None:
    """A Failure goes down the errback chain."""
    waiter: Deferred[int] = Deferred()
    settle(waiter, Failure(KeyError("missing")))
    with pytest.raises(KeyError):
        result_of(waiter)


def test_settle_after_cancel_is_silent() -> None:
    """Work ending after its waiter gave up does not raise AlreadyCalledError."""
    waiter: Deferred[int] = Deferred()
    waiter.cancel()
    settle(waiter, 3)
    with pytest.raises(CancelledError):
        result_of(waiter)


def test_wakeup_remembers_a_poke_before_the_wait() -> None:
    """A poke between clear and wait makes the wait fire at once; after clear it waits for the next poke."""
    wakeup = Wakeup()
    wakeup.poke()
    assert wakeup.wait().called
    wakeup.clear()
    waiting = wakeup.wait()
    assert not waiting.called
    wakeup.poke()
    assert waiting.called


def test_in_flight_waits_for_every_tracked_deferred() -> None:
    """ended fires only once every tracked Deferred has a result; finished ones are dropped."""
    flight = InFlight()
    first: Deferred[int] = flight.add(Deferred())
    second: Deferred[int] = flight.add(Deferred())
    assert len(flight) == 2
    ended = flight.ended()
    first.callback(1)
    assert not ended.called and len(flight) == 1
    second.errback(ValueError("x"))
    assert result_of(ended) is None
    assert len(flight) == 0
    with pytest.raises(ValueError):
        result_of(second)
    assert flight.ended().called


def test_in_flight_wait_can_time_out_without_unhandled_errors() -> None:
    """A bounded wait ends at its timeout; the work stays tracked and nothing is logged as unhandled."""
    clock = Clock()
    flight = InFlight()
    work: Deferred[int] = flight.add(Deferred())
    waiting = flight.ended().addTimeout(5, clock)
    clock.advance(5)
    with pytest.raises(TimeoutError):
        result_of(waiting)
    assert len(flight) == 1
    work.callback(1)
    assert len(flight) == 0


def test_run_logged_logs_the_failure_and_is_waited_for() -> None:
    """Fire-and-forget work: its failure is logged (not lost), and ended waits for it."""
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        flight = InFlight()
        work: Deferred[None] = Deferred()
        flight.run_logged(work, Logger(namespace="test"), "work for {name} failed", name="b1")
        ended = flight.ended()
        assert not ended.called
        work.errback(RuntimeError("disk full"))
        assert ended.called
    finally:
        globalLogPublisher.removeObserver(seen)
    failures = [event for event in seen if event.get("log_level") == LogLevel.critical]
    assert [event["name"] for event in failures] == ["b1"]
    assert failures[0]["log_failure"].check(RuntimeError)
