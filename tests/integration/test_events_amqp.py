"""What only the AMQP bus does: the exchange, message properties, confirms, reconnects, logs, and the
``imagefactory-events`` command (what needs no broker, URLs among it: tests/unit/test_events_amqp_offline.py).

Against the real RabbitMQ broker (see tests/integration/conftest.py for how it is found
or started).  Connections are cut without disturbing anyone else's: either
``rabbitmqctl close_connection`` on the connections of a user created for
this module, or a local TCP forwarder between the bus and the broker that
the test takes down and brings back (the broker itself stays up).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.portforward import ProxyClientFactory, ProxyServer
from twisted.python.failure import Failure
from txamqp.client import ChannelClosed
from txamqp.content import Content

from imgfac_twisted.events import Event
from imgfac_twisted.events.amqp import AmqpBus, BusUnavailable, parse_amqp_url, redacted_url
from imgfac_twisted.events.consumer import readable_line
from support.rabbitmq import (
    SECRET,
    RawAmqp,
    as_pairs,
    body_text,
    eventually,
    global_reactor,
    rabbitmqctl,
    sample_events,
    sleep,
    with_credentials,
    within,
)

pytestmark = pytest.mark.filterwarnings("ignore:twisted.internet.defer.returnValue:DeprecationWarning")


# -- fixtures ----------------------------------------------------------------------------------


def via(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port`` (a forwarder) instead of the broker."""
    address = parse_amqp_url(url)
    return (
        f"amqp://{quote(address.username, safe='')}:{quote(address.password, safe='')}@127.0.0.1:{port}/"
        f"{quote(address.vhost, safe='')}"
    )


@pytest.fixture(scope="module")
def secret_user(rabbitmq_url: str) -> Iterator[str]:
    """A broker user of this module's own, with password SECRET: its URL (connections can be cut by user)."""
    if parse_amqp_url(rabbitmq_url).host not in ("127.0.0.1", "localhost") or shutil.which("rabbitmqctl") is None:
        pytest.skip("needs a local broker and rabbitmqctl to add a user")
    user = f"imagefactory-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", user, SECRET)
    try:
        rabbitmqctl("set_permissions", "-p", parse_amqp_url(rabbitmq_url).vhost, user, ".*", ".*", ".*")
        yield with_credentials(rabbitmq_url, user, SECRET)
    finally:
        rabbitmqctl("delete_user", user)


async def rabbitmqctl_async(*args: str) -> str:
    """``rabbitmqctl`` without blocking the reactor."""
    out, err, code = await getProcessOutputAndValue(
        shutil.which("rabbitmqctl") or "rabbitmqctl", args, env=dict(os.environ)
    )
    assert code == 0, f"rabbitmqctl {args} failed: {err!r}"
    return out.decode()


async def close_connections_of(user: str) -> int:
    """Have the broker close every connection of ``user`` (as an operator would); how many it closed."""
    listing = await rabbitmqctl_async("list_connections", "--quiet", "--no-table-headers", "user", "pid")
    names = [line.split("\t", 1)[1] for line in listing.splitlines() if line.split("\t", 1)[0] == user]
    for name in names:
        await rabbitmqctl_async("close_connection", name, "test")
    return len(names)


class LogCapture:
    """Every log event while installed, as text (message, fields and tracebacks)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def text(self) -> str:
        parts = []
        for event in self.events:
            parts.append(formatEvent(event) or "")
            parts.append(repr(event))
            failure = event.get("log_failure")
            if isinstance(failure, Failure):
                parts.append(failure.getTraceback())
        return "\n".join(parts)

    def messages(self, level: LogLevel | None = None, namespace_part: str = "AmqpBus") -> list[str]:
        return [
            formatEvent(e)
            for e in self.events
            if namespace_part in e.get("log_namespace", "") and (level is None or e.get("log_level") == level)
        ]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Captures the log events of one test."""
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


class _Forwarded(ProxyServer):
    noisy = False

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        self.factory.accepted += 1
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.connections.discard(self)
        super().connectionLost(reason)


class _ClientSide(ProxyClientFactory):
    noisy = False


class Forwarder(Factory):
    """A TCP forwarder to the broker that a test can take down (refusing connections) and bring back."""

    protocol = _Forwarded
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connections: set[_Forwarded] = set()
        self.accepted = 0
        self.listening: Any = None
        self.listen_port = 0

    def buildProtocol(self, addr: Any) -> _Forwarded:
        server = _Forwarded()
        server.factory = self
        server.host, server.port = self.host, self.port
        server.clientProtocolFactory = _ClientSide
        server.reactor = global_reactor()
        return server

    def up(self) -> int:
        self.listening = global_reactor().listenTCP(self.listen_port, self, interface="127.0.0.1")
        self.listen_port = self.listening.getHost().port
        return self.listen_port

    async def down(self) -> None:
        await self.listening.stopListening()
        for server in list(self.connections):
            server.transport.abortConnection()


@pytest_twisted.async_yield_fixture
async def forwarder(rabbitmq_url: str) -> Any:
    """A Forwarder to the broker, listening on a free loopback port."""
    address = parse_amqp_url(rabbitmq_url)
    f = Forwarder(address.host, address.port)
    f.up()
    try:
        yield f
    finally:
        if f.listening is not None and f.listening.connected:
            await f.down()


class Buses:
    """Makes AmqpBus instances (each on a fresh exchange) and stops them, deleting their exchanges."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[AmqpBus] = []

    def make(self, url: str | None = None, **kwargs: Any) -> AmqpBus:
        kwargs.setdefault("exchange", f"imagefactory-test-{uuid.uuid4().hex[:12]}")
        bus = AmqpBus(global_reactor(), url or self.url, **kwargs)
        self.made.append(bus)
        return bus

    async def start(self, url: str | None = None, **kwargs: Any) -> AmqpBus:
        bus = self.make(url, **kwargs)
        bus.startService()
        await within(bus.wait_connected(fail_fast=True))
        return bus

    async def close(self) -> None:
        exchanges = {bus.exchange for bus in self.made}
        for bus in self.made:
            if bus.running:
                await within(bus.stopService())
        raw = await RawAmqp.connect(self.url)
        for exchange in exchanges:
            await raw.delete_exchange(exchange)
        await raw.close()


@pytest_twisted.async_yield_fixture
async def buses(rabbitmq_url: str) -> Any:
    """A Buses factory for one test."""
    made = Buses(rabbitmq_url)
    try:
        yield made
    finally:
        await made.close()


@pytest_twisted.async_yield_fixture
async def raw(rabbitmq_url: str) -> Any:
    """The test's own txamqp connection to the broker."""
    connection = await RawAmqp.connect(rabbitmq_url)
    try:
        yield connection
    finally:
        await connection.close()


# -- URLs --------------------------------------------------------------------------------------


# -- the exchange and the messages -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_exchange_declared_durable_topic_on_connect(buses: Buses, raw: RawAmqp) -> None:
    """Connecting declares the exchange, durable, of type topic, before anything is published."""
    bus = await buses.start()
    channel = await raw.channel()
    await within(channel.exchange_declare(exchange=bus.exchange, passive=True))
    # A declare that differs from the existing exchange is refused (406), so
    # these show the type and the durability the bus gave it.
    await within(channel.exchange_declare(exchange=bus.exchange, type="topic", durable=True))
    for kwargs in ({"type": "topic", "durable": False}, {"type": "direct", "durable": True}):
        channel = await raw.channel()
        with pytest.raises(ChannelClosed, match="406"):
            await within(channel.exchange_declare(exchange=bus.exchange, **kwargs))
    if shutil.which("rabbitmqctl") is not None:
        listing = await rabbitmqctl_async(
            "list_exchanges",
            "--quiet",
            "--no-table-headers",
            "-p",
            parse_amqp_url(buses.url).vhost,
            "name",
            "type",
            "durable",
        )
        assert f"{bus.exchange}\ttopic\ttrue" in listing.splitlines()


@pytest_twisted.ensureDeferred
async def test_messages_are_persistent_json_with_event_id(buses: Buses, raw: RawAmqp) -> None:
    """A published message is persistent, application/json, its message-id the event id, its body the event's."""
    bus = await buses.start()
    channel, queue = await raw.bound_queue(bus.exchange, "#")
    event = sample_events()[-1]
    await within(bus.publish(event))
    [message] = await raw.get_all(channel, queue)
    properties = message.content.properties
    assert properties["delivery-mode"] == 2
    assert properties["content-type"] == "application/json"
    assert properties["message-id"] == event.event_id
    assert message.routing_key == event.routing_key == "provider_image.push.failed"
    assert body_text(message).encode("utf-8") == event.body_bytes()


@pytest_twisted.ensureDeferred
async def test_foreign_messages_do_not_stall_subscribers(buses: Buses, raw: RawAmqp) -> None:
    """A non-ASCII UTF-8 body and a non-JSON body from another publisher: the first is delivered, the
    second skipped, and later events still arrive."""
    bus = await buses.start()
    received: list[Event] = []
    await within(bus.subscribe("#", received.append))
    channel = await raw.channel()
    unicode_body = {"event_id": "foreign", "status_detail": "\u00e9\u2603 " * 3000}  # spans several frames
    await within(
        channel.basic_publish(
            exchange=bus.exchange,
            routing_key="a.b.c",
            content=Content(json.dumps(unicode_body, ensure_ascii=False).encode("utf-8")),
        )
    )
    await within(channel.basic_publish(exchange=bus.exchange, routing_key="a.b.c", content=Content(b"not json")))
    event = sample_events()[0]  # on the same channel, so that it is queued after the other two
    await within(
        channel.basic_publish(exchange=bus.exchange, routing_key=event.routing_key, content=Content(event.body_bytes()))
    )
    await eventually(lambda: len(received) >= 2, what="both events")
    assert as_pairs(received) == [("a.b.c", unicode_body), (event.routing_key, event.body)]


# -- confirms ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_publish_fails_fast_while_broker_unreachable(
    buses: Buses, forwarder: Forwarder, logs: LogCapture
) -> None:
    """With the broker unreachable, a publish fails at once (no queueing); wait_connected(fail_fast) fails."""
    await forwarder.down()
    bus = buses.make(via(buses.url, forwarder.listen_port))
    bus.startService()
    with pytest.raises(BusUnavailable, match="cannot connect"):
        await within(bus.wait_connected(fail_fast=True))
    started = time.monotonic()
    failures: list[Failure] = []
    bus.publish(sample_events()[0]).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(BusUnavailable)
    assert time.monotonic() - started < 0.1
    await within(bus.stopService())


@pytest_twisted.ensureDeferred
async def test_reconnects_after_broker_closes_connections(buses: Buses, secret_user: str) -> None:
    """When the broker closes the connection (rabbitmqctl close_connection), every unconfirmed publish
    fails with BusUnavailable, subscriptions end, and the bus reconnects by itself (within 30 s),
    calling the when_connected callbacks again."""
    user = parse_amqp_url(secret_user).username
    bus = await buses.start(secret_user)
    connects: list[float] = []
    bus.when_connected(lambda: connects.append(time.monotonic()))
    assert len(connects) == 1  # called at once: it is connected
    old_subscription: list[Event] = []
    await within(bus.subscribe("#", old_subscription.append))

    # Keep 500 publishes in flight until the connection goes.
    outcomes: list[Any] = []
    in_flight = [0]
    stop = [False]

    def settle(result: Any) -> None:
        in_flight[0] -= 1
        outcomes.append(result)

    async def keep_publishing() -> None:
        events = sample_events()
        i = 0
        while not stop[0]:
            # At most 500 per turn: a publish that fails at once settles at
            # once, and the loop must still give the reactor its turn.
            for _ in range(500):
                if in_flight[0] >= 500 or not bus.is_connected:
                    break
                in_flight[0] += 1
                bus.publish(events[i % len(events)]).addBoth(settle)
                i += 1
            await sleep(0.001)

    publishing = Deferred.fromCoroutine(keep_publishing())
    try:
        await sleep(0.3)
        assert await close_connections_of(user) == 1
        await eventually(lambda: not bus.is_connected, what="the connection to be seen lost")
        lost_at = time.monotonic()
        await eventually(lambda: bus.is_connected, timeout=30, what="reconnected")
        reconnect_time = time.monotonic() - lost_at
    finally:
        stop[0] = True
        await within(publishing)
    await eventually(lambda: in_flight[0] == 0, what="every publish settled (none left hanging)")

    # (test_unconfirmed_publishes_fail_when_connection_drops makes sure some were in flight.)
    failed = [r for r in outcomes if isinstance(r, Failure)]
    assert all(f.check(BusUnavailable) for f in failed)
    assert any(r is None for r in outcomes)
    assert reconnect_time < 30
    assert len(connects) == 2

    # The old subscription ended with its connection; a new one works.
    seen_before = len(old_subscription)
    new_subscription: list[Event] = []
    await within(bus.subscribe("#", new_subscription.append))
    event = sample_events()[0]
    await within(bus.publish(event))
    await eventually(lambda: len(new_subscription) == 1, what="the new subscription's event")
    assert len(old_subscription) == seen_before


@pytest_twisted.ensureDeferred
async def test_publish_fires_on_the_broker_ack_not_before(buses: Buses, forwarder: Forwarder, raw: RawAmqp) -> None:
    """With the broker's answers held back (the forwarder stops reading them), a message is already on a
    bound queue but its publish has not fired; it fires once the ack gets through."""
    bus = await buses.start(via(buses.url, forwarder.listen_port))
    channel, queue = await raw.bound_queue(bus.exchange, "#")
    [link] = forwarder.connections
    link.peer.transport.pauseProducing()  # stop reading what the broker sends
    event = sample_events()[0]
    published = bus.publish(event)
    assert not published.called
    await sleep(0.2)
    messages = await raw.get_all(channel, queue)
    assert [m.content.properties["message-id"] for m in messages] == [event.event_id]
    assert not published.called
    link.peer.transport.resumeProducing()
    await within(published)


@pytest_twisted.ensureDeferred
async def test_unconfirmed_publishes_fail_when_connection_drops(buses: Buses, forwarder: Forwarder) -> None:
    """Publishes the broker has not confirmed when the connection drops all fail with BusUnavailable at once
    (none is left hanging); the bus then reconnects."""
    bus = await buses.start(via(buses.url, forwarder.listen_port))
    [link] = forwarder.connections
    link.peer.transport.pauseProducing()  # the broker's acks stay in the forwarder
    outcomes: list[Any] = []
    for event in sample_events():
        bus.publish(event).addBoth(outcomes.append)
    await sleep(0.2)
    assert outcomes == []
    link.transport.abortConnection()
    await eventually(lambda: len(outcomes) == len(sample_events()), what="every publish settled")
    assert all(isinstance(r, Failure) and r.check(BusUnavailable) for r in outcomes)
    assert "before it confirmed" in str(outcomes[0].value)
    await eventually(lambda: bus.is_connected, timeout=30, what="reconnected")
    await within(bus.publish(sample_events()[0]))


@pytest_twisted.ensureDeferred
async def test_back_within_bounded_time_when_broker_returns(
    buses: Buses, forwarder: Forwarder, logs: LogCapture
) -> None:
    """Broker away for 6 s: the bus backs off (logging once, not per attempt) and is connected again
    within its 5 s maximum delay of the broker coming back."""
    bus = await buses.start(via(buses.url, forwarder.listen_port))
    await forwarder.down()
    await eventually(lambda: not bus.is_connected, what="loss noticed")
    await sleep(6.0)
    assert not bus.is_connected
    forwarder.up()
    back = time.monotonic()
    await eventually(lambda: bus.is_connected, timeout=30, what="reconnected")
    assert time.monotonic() - back < 5.0 + 1.0
    warnings = logs.messages(LogLevel.warn)
    assert len(warnings) == 2, warnings  # "lost ...", then "cannot connect ... retrying", once
    assert "lost its connection" in warnings[0] and "cannot connect" in warnings[1]
    infos = logs.messages(LogLevel.info)
    assert "connected" in infos[-1] and "failed attempt" in infos[-1]
    await within(bus.publish(sample_events()[0]))


@pytest_twisted.ensureDeferred
async def test_stop_service_stops_reconnecting(buses: Buses, forwarder: Forwarder, rabbitmq_url: str) -> None:
    """stopService while retrying (here: refused credentials) ends the retries; stopService while connected
    closes the connection and fails publishes still unconfirmed."""
    bad = with_credentials(via(rabbitmq_url, forwarder.listen_port), "guest", "wrong-password")
    bus = buses.make(bad, min_retry_delay=0.05, max_retry_delay=0.1)
    bus.startService()
    await eventually(lambda: forwarder.accepted >= 3, what="several attempts")
    await within(bus.stopService())
    attempts = forwarder.accepted
    await sleep(0.5)
    assert forwarder.accepted == attempts

    good = await buses.start(via(rabbitmq_url, forwarder.listen_port))
    pending = [good.publish(e) for e in sample_events()]
    outcomes: list[Any] = []
    for d in pending:
        d.addBoth(outcomes.append)
    await within(good.stopService())
    await eventually(lambda: len(outcomes) == len(pending), what="every publish settled")
    assert all(r is None or r.check(BusUnavailable) for r in outcomes)
    assert not good.is_connected
    await sleep(1.0)
    assert not good.is_connected and not forwarder.connections


@pytest_twisted.ensureDeferred
async def test_password_never_logged(buses: Buses, secret_user: str, logs: LogCapture) -> None:
    """Through connect, publish, a cut connection, reconnect, stop and refused credentials, no log event
    (message, fields or traceback) holds the password, raw or percent-encoded."""
    user = parse_amqp_url(secret_user).username
    bus = await buses.start(secret_user)
    await within(bus.publish(sample_events()[0]))
    await close_connections_of(user)
    await eventually(lambda: not bus.is_connected)
    await eventually(lambda: bus.is_connected, timeout=30)
    await within(bus.stopService())

    wrong = with_credentials(secret_user, user, SECRET + "-wrong")
    refused = buses.make(wrong, min_retry_delay=0.05, max_retry_delay=0.1)
    refused.startService()
    with pytest.raises(BusUnavailable) as raised:
        await within(refused.wait_connected(fail_fast=True))
    await sleep(0.3)
    await within(refused.stopService())

    text = logs.text() + str(raised.value) + repr(bus.__dict__) + repr(refused.__dict__)
    assert redacted_url(secret_user) in text
    for secret in (SECRET, quote(SECRET, safe=""), SECRET + "-wrong", "s3cr"):
        assert secret not in text
    assert len([m for m in logs.messages(LogLevel.warn) if "cannot connect" in m]) == 1


# -- the imagefactory-events command -----------------------------------------------------------


class Consumer(ProcessProtocol):
    """``python -m imgfac_twisted.events.consumer`` run by the test: its output lines and its end."""

    def __init__(self) -> None:
        self.stdout = b""
        self.stderr = b""
        self.ended: Deferred = Deferred()
        self.exit_code: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.stdout += data

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        if reason.check(ProcessDone):
            self.exit_code = 0
        elif reason.check(ProcessTerminated):
            self.exit_code = reason.value.exitCode if reason.value.exitCode is not None else -reason.value.signal
        self.ended.callback(self.exit_code)

    def lines(self) -> list[str]:
        return [line for line in self.stdout.decode("utf-8").split("\n")[:-1]]


def run_consumer(args: list[str], cwd: str, env: dict[str, str] | None = None) -> Consumer:
    """Start the command (from ``cwd``, so that the installed package is the one imported)."""
    consumer = Consumer()
    global_reactor().spawnProcess(
        consumer,
        sys.executable,
        [sys.executable, "-m", "imgfac_twisted.events.consumer", *args],
        env={**os.environ, **(env or {})},
        path=cwd,
    )
    return consumer


@pytest.mark.parametrize("how", ["INT", "TERM"])
@pytest_twisted.ensureDeferred
async def test_consumer_prints_json_lines_and_exits_cleanly(buses: Buses, tmp_path: Any, how: str) -> None:
    """imagefactory-events prints each event as one JSON line (Event.to_json) as it comes, and exits with
    0 on SIGINT and SIGTERM."""
    exchange = f"imagefactory-test-{uuid.uuid4().hex[:12]}"
    consumer = run_consumer(["--amqp_url", buses.url, "--exchange", exchange], str(tmp_path))
    try:
        await eventually(
            lambda: b"listening for events" in consumer.stderr or consumer.ended.called,
            timeout=30,
            what="the consumer subscribed",
        )
        assert b"listening for events" in consumer.stderr, consumer.stderr
        bus = await buses.start(exchange=exchange)
        events = sample_events()
        for event in events:
            await within(bus.publish(event))
        await eventually(lambda: len(consumer.lines()) >= len(events), what="a line per event")
        assert [Event.from_json(line) for line in consumer.lines()] == events
    finally:
        if not consumer.ended.called:
            consumer.transport.signalProcess(how)
    assert await within(consumer.ended) == 0, consumer.stderr
    assert b"Traceback" not in consumer.stderr


@pytest_twisted.ensureDeferred
async def test_consumer_readable_lines_with_pattern(buses: Buses, tmp_path: Any) -> None:
    """--readable prints a line for people per event; --pattern selects the events (env var gives the URL)."""
    exchange = f"imagefactory-test-{uuid.uuid4().hex[:12]}"
    consumer = run_consumer(
        ["--exchange", exchange, "--pattern", "*.*.failed", "--readable"],
        str(tmp_path),
        env={"IMAGEFACTORY_AMQP_URL": buses.url},
    )
    try:
        await eventually(
            lambda: b"listening for events" in consumer.stderr or consumer.ended.called,
            timeout=30,
            what="the consumer subscribed",
        )
        bus = await buses.start(exchange=exchange)
        events = sample_events()
        for event in events:
            await within(bus.publish(event))
        failures = [e for e in events if e.body["new_status"] == "FAILED"]
        await eventually(lambda: len(consumer.lines()) >= len(failures), what="a line per failure")
        lines = consumer.lines()
        assert lines == [readable_line(e) for e in failures]
        push = failures[-1].body
        assert lines[-1] == (
            f"{push['timestamp']} {push['id']} push ec2-us-east-1 PUSHING->FAILED 30% quota exceeded (\u00e9, \u2603)"
        )
    finally:
        if not consumer.ended.called:
            consumer.transport.signalProcess("INT")
    assert await within(consumer.ended) == 0, consumer.stderr


@pytest_twisted.ensureDeferred
async def test_consumer_subscribes_again_after_reconnecting(buses: Buses, forwarder: Forwarder, tmp_path: Any) -> None:
    """When its connection is cut, the command reconnects and subscribes again, and goes on printing."""
    exchange = f"imagefactory-test-{uuid.uuid4().hex[:12]}"
    consumer = run_consumer(
        ["--amqp_url", via(buses.url, forwarder.listen_port), "--exchange", exchange], str(tmp_path)
    )
    try:
        await eventually(
            lambda: consumer.stderr.count(b"listening for events") == 1 or consumer.ended.called,
            timeout=30,
            what="the consumer subscribed",
        )
        bus = await buses.start(exchange=exchange)
        first, second = sample_events()[:2]
        await within(bus.publish(first))
        await eventually(lambda: len(consumer.lines()) == 1, what="the first line")
        for link in list(forwarder.connections):
            link.transport.abortConnection()
        await eventually(
            lambda: consumer.stderr.count(b"listening for events") == 2, timeout=30, what="subscribed again"
        )
        await within(bus.publish(second))
        await eventually(lambda: len(consumer.lines()) == 2, what="the second line")
        assert [Event.from_json(line) for line in consumer.lines()] == [first, second]
    finally:
        if not consumer.ended.called:
            consumer.transport.signalProcess("INT")
    assert await within(consumer.ended) == 0, consumer.stderr


@pytest_twisted.ensureDeferred
async def test_consumer_unreachable_broker_fails_clearly(tmp_path: Any) -> None:
    """With no broker at the URL, the command exits non-zero at once, saying so, without the password."""
    consumer = run_consumer(["--amqp_url", "amqp://someone:hunter2@127.0.0.1:1/%2F"], str(tmp_path))
    code = await within(consumer.ended, 20)
    stderr = consumer.stderr.decode()
    assert code == 1
    assert "imagefactory-events: cannot connect to amqp://someone:***@127.0.0.1:1/%2F" in stderr
    assert "hunter2" not in stderr and consumer.stdout == b""
