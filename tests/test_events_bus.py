"""One conformance suite for every event bus: InProcessBus and AmqpBus must behave the same.

Each test runs once per bus (the ``harness`` fixture).  The AMQP runs use the
real RabbitMQ broker (``$IMAGEFACTORY_TEST_AMQP_URL``, default
127.0.0.1:5672 guest/guest; started with ``rabbitmq-server -detached`` if the
port is closed) and the real reactor (pytest-twisted), each test on an
exchange of its own, deleted afterwards.

The broker helpers here (``rabbitmq_url``, ``RawAmqp``, ``eventually``,
``sample_events``) are shared with test_events_amqp.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any, Awaitable, Callable

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientCreator
from twisted.internet.task import deferLater
from txamqp.client import TwistedDelegate
from txamqp.protocol import AMQClient
from txamqp.spec import load as load_spec

from imgfac_twisted.events import Event, event_for_change
from imgfac_twisted.events.amqp import DEFAULT_SPEC_PATH, AmqpBus, parse_amqp_url
from imgfac_twisted.events.inprocess import InProcessBus
from imgfac_twisted.model import Builder, BuilderChange, Operation, Status, new_id

#: txamqp 0.8.2 still uses ``defer.returnValue``.
pytestmark = pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")

BROKER_URL = os.environ.get("IMAGEFACTORY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

#: How long an AMQP step may take before a test gives up (they take milliseconds).
STEP_TIMEOUT = 10.0


def _reactor() -> Any:
    from twisted.internet import reactor  # installed by pytest-twisted

    return reactor


# -- the broker --------------------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _start_local_broker(host: str, port: int) -> str | None:
    """Start RabbitMQ on this machine; None once it listens, else why not."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"the broker {host}:{port} is not local, so it cannot be started here"
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return None
        time.sleep(0.5)
    return "rabbitmq-server -detached did not bring the broker up within 60 s"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of a reachable RabbitMQ broker (started here if it is local and down)."""
    address = parse_amqp_url(BROKER_URL)
    if not _port_open(address.host, address.port):
        why_not = _start_local_broker(address.host, address.port)
        if why_not is not None:
            pytest.skip(f"no RabbitMQ broker at {address.host}:{address.port} and {why_not}")
    return BROKER_URL


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (blocking: a fraction of a second) and return its output; skip without it."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed here")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


class RawAmqp:
    """A plain txamqp connection of the test's own, to look at what the broker holds."""

    spec = load_spec(DEFAULT_SPEC_PATH)

    def __init__(self, client: AMQClient) -> None:
        self.client = client
        self._next_channel = 1

    @classmethod
    async def connect(cls, url: str) -> RawAmqp:
        address = parse_amqp_url(url)
        creator = ClientCreator(_reactor(), AMQClient, delegate=TwistedDelegate(), vhost=address.vhost,
                                spec=cls.spec)
        client = await creator.connectTCP(address.host, address.port, timeout=STEP_TIMEOUT)
        await within(client.authenticate(address.username, address.password))
        return cls(client)

    async def channel(self) -> Any:
        """A fresh open channel (a failed declare closes its channel, so each check has its own)."""
        channel = await self.client.channel(self._next_channel)
        self._next_channel += 1
        await within(channel.channel_open())
        return channel

    async def bound_queue(self, exchange: str, pattern: str) -> tuple[Any, str]:
        """A new exclusive queue bound to ``exchange`` with ``pattern``: (its channel, its name)."""
        channel = await self.channel()
        declared = await within(channel.queue_declare(queue="", exclusive=True, auto_delete=False))
        await within(channel.queue_bind(queue=declared.queue, exchange=exchange, routing_key=pattern))
        return channel, declared.queue

    async def get_all(self, channel: Any, queue: str) -> list[Any]:
        """Every message now on ``queue`` (taken off it), without waiting for more."""
        messages = []
        while True:
            reply = await within(channel.basic_get(queue=queue, no_ack=True))
            if reply.method.name == "get-empty":
                return messages
            messages.append(reply)

    async def delete_exchange(self, exchange: str) -> None:
        channel = await self.channel()
        await within(channel.exchange_delete(exchange=exchange))

    async def close(self) -> None:
        channel0 = await self.client.channel(0)
        try:
            await within(channel0.connection_close(reply_code=200, reply_text="test done"), 2.0)
        finally:
            self.client.transport.loseConnection()


def body_text(message: Any) -> str:
    """A delivered message's body as text (txamqp gives str when it is valid UTF-8, else bytes)."""
    body = message.content.body
    return body.decode("utf-8") if isinstance(body, bytes) else body


# -- waiting -----------------------------------------------------------------------------------


async def within(d: Any, seconds: float = STEP_TIMEOUT) -> Any:
    """Await ``d``, failing with TimeoutError after ``seconds``."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    return await d.addTimeout(seconds, _reactor())


async def sleep(seconds: float) -> None:
    await deferLater(_reactor(), seconds, lambda: None)


async def eventually(predicate: Callable[[], bool], timeout: float = STEP_TIMEOUT, what: str = "") -> None:
    """Wait (polling every 10 ms) until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        await sleep(0.01)


# -- events ------------------------------------------------------------------------------------


def sample_events(start: float = 1_700_000_000.0) -> list[Event]:
    """Events of a build that completes, a push that fails and a build that fails, interleaved."""
    image_id, build_id = new_id(), new_id()
    build_id_a = new_id()
    build = Builder(id=build_id_a, operation=Operation.BUILD, status=Status.NEW, completed=0, image_id=image_id,
                    build_id=build_id, target="mock", target_image_id=build_id_a, created=start, updated=start)
    push = Builder(id=new_id(), operation=Operation.PUSH, status=Status.NEW, completed=0, image_id=image_id,
                   build_id=build_id, target="mock", provider="ec2-us-east-1", target_image_id=build_id_a,
                   provider_account_identifier="123456789012", created=start, updated=start)
    build_id_b = new_id()
    other = Builder(id=build_id_b, operation=Operation.BUILD, status=Status.NEW, completed=0, image_id=image_id,
                    build_id=build_id, target="openstack-kvm", target_image_id=build_id_b, created=start,
                    updated=start)
    changes: list[BuilderChange] = [BuilderChange(None, build), BuilderChange(None, other)]

    def move(old: Builder, status: Status, completed: int | None = None, **extra: Any) -> Builder:
        new = old.moved(status, completed, now=start + len(changes), **extra)
        changes.append(BuilderChange(old, new))
        return new

    build = move(build, Status.PENDING)
    other = move(other, Status.FAILED, status_detail="no OS plug-in for this template")
    build = move(build, Status.BUILDING, 10)
    build = move(build, Status.BUILDING, 60)
    build = move(build, Status.COMPLETED)
    changes.append(BuilderChange(None, push))
    push = move(push, Status.PENDING)
    push = move(push, Status.PUSHING, 30)
    push = move(push, Status.FAILED, status_detail="quota exceeded (\u00e9, \u2603)")
    return [event_for_change(change, start + i) for i, change in enumerate(changes)]


def extra_failure() -> Event:
    """One more failure event (a marker that must come last)."""
    builder = Builder(id=new_id(), operation=Operation.BUILD, status=Status.NEW, completed=0, image_id=new_id(),
                      build_id=new_id(), target="mock")
    return event_for_change(BuilderChange(builder, builder.moved(Status.FAILED, now=1.0, status_detail="marker")),
                            1.0)


def extra_push() -> Event:
    """One more push event (a marker that must come last)."""
    builder = Builder(id=new_id(), operation=Operation.PUSH, status=Status.NEW, completed=0, image_id=new_id(),
                      build_id=new_id(), target="mock", provider="gce-europe-west1")
    return event_for_change(BuilderChange(None, builder), 1.0)


def as_pairs(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.routing_key, e.body) for e in events]


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
        self.bus = AmqpBus(_reactor(), url, exchange=self.exchange)
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
