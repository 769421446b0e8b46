"""The RabbitMQ broker the AMQP tests use, a raw AMQP client to look at it, and the waiting and event helpers
shared by the bus conformance suite and the AmqpBus tests (``rabbitmq_url``: tests/integration/conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientCreator
from twisted.internet.task import deferLater
from txamqp.client import TwistedDelegate
from txamqp.protocol import AMQClient
from txamqp.spec import load as load_spec

from imgfac_twisted.events import Event, event_for_change
from imgfac_twisted.events.amqp import DEFAULT_SPEC_PATH, parse_amqp_url
from imgfac_twisted.model import Builder, BuilderChange, Operation, Status, new_id

BROKER_URL = os.environ.get("IMAGEFACTORY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

#: A password that needs every kind of percent-encoding, and that no log may show.
SECRET = "s3cr:t@p/ss%w\u00f6rd"

#: How long an AMQP step may take before a test gives up (they take milliseconds).
STEP_TIMEOUT = 10.0


def global_reactor() -> Any:
    """The global reactor, which pytest-twisted runs (the AMQP tests use real sockets and timers)."""
    from twisted.internet import reactor  # installed by pytest-twisted

    return reactor


# -- the broker --------------------------------------------------------------------------------


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with another user and password (both percent-encoded)."""
    address = parse_amqp_url(url)
    return (
        f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{address.host}:{address.port}/"
        f"{quote(address.vhost, safe='')}"
    )


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def start_local_broker(host: str, port: int) -> str | None:
    """Start RabbitMQ on this machine; None once it listens, else why not."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return f"the broker {host}:{port} is not local, so it cannot be started here"
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_open(host, port):
            return None
        time.sleep(0.5)
    return "rabbitmq-server -detached did not bring the broker up within 60 s"


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
        creator = ClientCreator(
            global_reactor(), AMQClient, delegate=TwistedDelegate(), vhost=address.vhost, spec=cls.spec
        )
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
    return await d.addTimeout(seconds, global_reactor())


async def sleep(seconds: float) -> None:
    await deferLater(global_reactor(), seconds, lambda: None)


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
    build = Builder(
        id=build_id_a,
        operation=Operation.BUILD,
        status=Status.NEW,
        completed=0,
        image_id=image_id,
        build_id=build_id,
        target="mock",
        target_image_id=build_id_a,
        created=start,
        updated=start,
    )
    push = Builder(
        id=new_id(),
        operation=Operation.PUSH,
        status=Status.NEW,
        completed=0,
        image_id=image_id,
        build_id=build_id,
        target="mock",
        provider="ec2-us-east-1",
        target_image_id=build_id_a,
        provider_account_identifier="123456789012",
        created=start,
        updated=start,
    )
    build_id_b = new_id()
    other = Builder(
        id=build_id_b,
        operation=Operation.BUILD,
        status=Status.NEW,
        completed=0,
        image_id=image_id,
        build_id=build_id,
        target="openstack-kvm",
        target_image_id=build_id_b,
        created=start,
        updated=start,
    )
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
    builder = Builder(
        id=new_id(),
        operation=Operation.BUILD,
        status=Status.NEW,
        completed=0,
        image_id=new_id(),
        build_id=new_id(),
        target="mock",
    )
    return event_for_change(BuilderChange(builder, builder.moved(Status.FAILED, now=1.0, status_detail="marker")), 1.0)


def extra_push() -> Event:
    """One more push event (a marker that must come last)."""
    builder = Builder(
        id=new_id(),
        operation=Operation.PUSH,
        status=Status.NEW,
        completed=0,
        image_id=new_id(),
        build_id=new_id(),
        target="mock",
        provider="gce-europe-west1",
    )
    return event_for_change(BuilderChange(None, builder), 1.0)


def as_pairs(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.routing_key, e.body) for e in events]
