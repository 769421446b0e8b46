"""One conformance suite for every event bus: InProcessBus and AmqpBus must behave the same.

Each test runs once per bus (the ``harness`` fixture).  The AMQP runs use the
real RabbitMQ broker (``$IMAGEFACTORY_TEST_AMQP_URL``, default
127.0.0.1:5672 guest/guest; started with ``rabbitmq-server -detached`` if the
port is closed) and the real reactor (pytest-twisted), each test on an
exchange of its own, deleted afterwards.

The broker helpers (``RawAmqp``, ``eventually``, ``sample_events``...) are
tests/support/rabbitmq.py's, the ``rabbitmq_url`` fixture tests/integration/conftest.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from imgfac_twisted.events import Event
from imgfac_twisted.events.amqp import AmqpBus
from imgfac_twisted.events.inprocess import InProcessBus
from support.rabbitmq import (
    RawAmqp,
    as_pairs,
    body_text,
    eventually,
    extra_failure,
    extra_push,
    global_reactor,
    sample_events,
    within,
)

#: txamqp 0.8.2 still uses ``defer.returnValue``.
pytestmark = pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")

# -- the buses under test ----------------------------------------------------------------------

#: Takes (and returns) what has reached a probe so far, without waiting.
Probe = Callable[[], Awaitable[list[tuple[str, dict[str, Any]]]]]


class InProcessHarness:
    """The in-process bus, with a probe that records what its subscriber was given."""

    kind = "inprocess"

    def __init__(self) -> None:
        self.bus = InProcessBus()

    async def probe(self, pattern: str) -> Probe:
        received: list[Event] = []
        await self.bus.subscribe(pattern, received.append)

        async def available() -> list[tuple[str, dict[str, Any]]]:
            taken = as_pairs(received)
            received.clear()
            return taken

        return available

    async def close(self) -> None:
        pass


class AmqpHarness:
    """An AmqpBus on an exchange of its own, with probes that read a bound queue directly."""

    kind = "amqp"

    def __init__(self, url: str) -> None:
        self.url = url
        self.exchange = f"imagefactory-test-{uuid.uuid4().hex[:12]}"
        self.bus = AmqpBus(global_reactor(), url, exchange=self.exchange)
        self.raw: RawAmqp | None = None

    async def start(self) -> None:
        self.bus.startService()
        await within(self.bus.wait_connected(fail_fast=True))
        self.raw = await RawAmqp.connect(self.url)

    async def probe(self, pattern: str) -> Probe:
        assert self.raw is not None
        raw = self.raw
        channel, queue = await raw.bound_queue(self.exchange, pattern)

        async def available() -> list[tuple[str, dict[str, Any]]]:
            import json

            return [(m.routing_key, json.loads(body_text(m))) for m in await raw.get_all(channel, queue)]

        return available

    async def close(self) -> None:
        await within(self.bus.stopService())
        if self.raw is not None:
            await self.raw.delete_exchange(self.exchange)
            await self.raw.close()


@pytest_twisted.async_yield_fixture(params=["inprocess", "amqp"])
async def harness(request: pytest.FixtureRequest) -> Any:
    """Each bus in turn, started, and stopped (and its exchange deleted) after the test."""
    if request.param == "inprocess":
        h: Any = InProcessHarness()
    else:
        h = AmqpHarness(request.getfixturevalue("rabbitmq_url"))
        await h.start()
    try:
        yield h
    finally:
        await h.close()


async def publish_all(bus: Any, events: list[Event]) -> None:
    """Publish ``events`` back to back (not waiting between them), then wait for every one."""
    await within(gatherResults([bus.publish(e) for e in events], consumeErrors=True))


# -- the suite ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_hash_receives_every_event_in_order(harness: Any) -> None:
    """A '#' subscriber gets every event, in publishing order, with the same routing key and body."""
    received: list[Event] = []
    await within(harness.bus.subscribe("#", received.append))
    events = sample_events()
    await publish_all(harness.bus, events)
    await eventually(lambda: len(received) >= len(events), what="every event delivered")
    assert as_pairs(received) == as_pairs(events)
    assert [e.event_id for e in received] == [e.event_id for e in events]
    assert all(isinstance(e, Event) for e in received)


@pytest_twisted.ensureDeferred
async def test_failed_pattern_receives_only_failures(harness: Any) -> None:
    """'*.*.failed' gets the failures of builds and pushes, and nothing else."""
    failures: list[Event] = []
    await within(harness.bus.subscribe("*.*.failed", failures.append))
    events = sample_events()
    marker = extra_failure()
    await publish_all(harness.bus, [*events, marker])
    await eventually(lambda: any(e.event_id == marker.event_id for e in failures), what="the marker")
    expected = [e for e in events if e.body["new_status"] == "FAILED"] + [marker]
    assert len(expected) == 3
    assert as_pairs(failures) == as_pairs(expected)


@pytest_twisted.ensureDeferred
async def test_provider_image_pattern_receives_only_pushes(harness: Any) -> None:
    """'provider_image.#' gets every push event and no build event."""
    pushes: list[Event] = []
    await within(harness.bus.subscribe("provider_image.#", pushes.append))
    events = sample_events()
    marker = extra_push()
    await publish_all(harness.bus, [*events, marker])
    await eventually(lambda: any(e.event_id == marker.event_id for e in pushes), what="the marker")
    expected = [e for e in events if e.body["operation"] == "push"] + [marker]
    assert len(expected) == 5
    assert as_pairs(pushes) == as_pairs(expected)


@pytest_twisted.ensureDeferred
async def test_two_subscribers_both_receive(harness: Any) -> None:
    """Two subscribers with overlapping patterns each get their own copy of every match."""
    first: list[Event] = []
    second: list[Event] = []
    await within(harness.bus.subscribe("#", first.append))
    await within(harness.bus.subscribe("target_image.*.*", second.append))
    events = sample_events()
    await publish_all(harness.bus, events)
    builds = [e for e in events if e.routing_key.startswith("target_image.")]
    await eventually(lambda: len(first) >= len(events) and len(second) >= len(builds), what="both subscribers")
    assert as_pairs(first) == as_pairs(events)
    assert as_pairs(second) == as_pairs(builds)


@pytest_twisted.ensureDeferred
async def test_cancelled_subscription_receives_nothing_more(harness: Any) -> None:
    """After cancel() has fired, a subscription gets no event; the others still do."""
    cancelled: list[Event] = []
    kept: list[Event] = []
    subscription = await within(harness.bus.subscribe("#", cancelled.append))
    await within(harness.bus.subscribe("#", kept.append))
    before = sample_events()[:2]
    await publish_all(harness.bus, before)
    await eventually(lambda: len(cancelled) == 2 and len(kept) == 2, what="events before the cancel")
    await within(subscription.cancel())
    after = sample_events()
    await publish_all(harness.bus, after)
    await eventually(lambda: len(kept) == 2 + len(after), what="events after the cancel")
    assert as_pairs(cancelled) == as_pairs(before)
    await within(subscription.cancel())  # a second cancel is harmless


@pytest_twisted.ensureDeferred
async def test_publish_fires_once_the_event_is_handed_on(harness: Any) -> None:
    """When publish's Deferred fires, the event already is with every matching subscriber.

    In process: the subscriber was called.  On AMQP: the broker confirmed,
    so the message is on every bound queue (read here straight off one).
    """
    probe = await harness.probe("target_image.#")
    events = sample_events()[:3]
    for event in events:
        await within(harness.bus.publish(event))
        # No waiting: it must be there the moment publish fires.
        assert await probe() == as_pairs([event])


@pytest_twisted.ensureDeferred
async def test_publish_without_subscribers_succeeds(harness: Any) -> None:
    """An event nobody listens to is published without error (and dropped)."""
    await publish_all(harness.bus, sample_events()[:3])


@pytest_twisted.ensureDeferred
async def test_failing_subscriber_does_not_stop_others(harness: Any) -> None:
    """A subscriber that raises is logged; it and the other subscribers still get later events."""
    calls: list[Event] = []
    kept: list[Event] = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    await within(harness.bus.subscribe("#", broken))
    await within(harness.bus.subscribe("#", kept.append))
    events = sample_events()[:4]
    await publish_all(harness.bus, events)
    await eventually(lambda: len(kept) == 4 and len(calls) == 4, what="all four to both")
    assert as_pairs(calls) == as_pairs(events)
