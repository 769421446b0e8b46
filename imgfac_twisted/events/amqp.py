"""The AMQP event bus: events published on a RabbitMQ topic exchange (AMQP 0-9-1, txamqp).

``AmqpBus`` is a Twisted service.  Started, it connects to the broker,
declares the exchange (a durable topic exchange) and turns on publisher
confirms; if the connection is lost or cannot be made it tries again, backing
off from 0.5 s to at most 5 s between attempts, until it is stopped.

``publish`` fires once the broker has confirmed the message and fails at once
with ``BusUnavailable`` while there is no connection: the caller (the outbox
relay) keeps the event and tries again later, so nothing is queued here.

Subscriptions are bound to the connection they were made on: when that
connection is lost they end, and the subscriber must subscribe again (use
``when_connected``); events published in between are not seen.  Each has its
own channel and exclusive, auto-delete, server-named queue, so nothing is
left on the broker once it ends; deliveries are not acknowledged (no_ack):
a subscription is a live view, not a durable work queue.

URLs are ``amqp://user:password@host:port/vhost``, parsed by ``amqp_url``;
logs show them through ``redacted_url``: never with the password.  The
txamqp client, adapted to RabbitMQ, is in ``amqp_wire``; the publisher
confirms are counted in ``amqp_publish``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp import spec as txamqp_spec
from txamqp.message import Message
from txamqp.protocol import AMQChannel
from zope.interface import implementer

from . import Event, EventCallback, IEventBus, ISubscription
from .amqp_publish import Confirms
from .amqp_subscriptions import Subscriptions
from .amqp_url import DEFAULT_URL, AmqpAddress, parse_amqp_url, redacted_url
from .amqp_wire import AmqpClient, AmqpClientFactory, BusUnavailable, PublishRejected, close_client, describe
from .amqp_work import JobHandler, WorkConsumer

#: Public names defined in ``amqp_url`` and ``amqp_wire`` too: the bus's callers import them from here.
__all__ = [
    "DEFAULT_SPEC_PATH",
    "DEFAULT_URL",
    "AmqpAddress",
    "AmqpBus",
    "BusUnavailable",
    "PublishRejected",
    "parse_amqp_url",
    "redacted_url",
]

#: RabbitMQ's variant of the 0-9-1 spec, from Debian's ``amqp-specs``: the
#: plain 0-9-1 file lacks the ``confirm`` class that publisher confirms need.
DEFAULT_SPEC_PATH = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"

#: The channel that publishes (with confirms); subscriptions get 2, 3, ...
PUBLISH_CHANNEL = 1


@implementer(IEventBus)
class AmqpBus(Service):
    """Publishes events on a RabbitMQ topic exchange with publisher confirms; subscribes with queues.

    ``heartbeat`` is the AMQP heartbeat in seconds (0: none), so a broker
    that vanishes without closing the socket is noticed; ``connect_timeout``
    bounds each connection attempt, handshake included.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        exchange: str = "imagefactory",
        spec_path: str = DEFAULT_SPEC_PATH,
        *,
        heartbeat: int = 30,
        connect_timeout: float = 10.0,
        min_retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        work_queue: str | None = None,
    ) -> None:
        self._reactor = reactor
        self._address = parse_amqp_url(url)
        self.url = redacted_url(url)
        self.exchange = exchange
        self._exchange_bytes = exchange.encode("utf-8")
        if not os.path.isfile(spec_path):
            raise FileNotFoundError(f"no AMQP spec at {spec_path}: install Debian's amqp-specs package")
        self._spec = txamqp_spec.load(spec_path)
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._min_retry_delay = min_retry_delay
        self._max_retry_delay = max_retry_delay

        self._client: AmqpClient | None = None  # set once the handshake is done
        self._connecting: AmqpClient | None = None  # during the handshake
        self._channel: AMQChannel | None = None  # the publishing channel
        self._confirms = Confirms(self._exchange_bytes)
        self._subscriptions = Subscriptions(self, exchange, PUBLISH_CHANNEL + 1, self.log)
        self._on_connect: list[Callable[[], object]] = []
        self._waiters: list[tuple[Deferred[None], bool]] = []
        self._retry_delay = min_retry_delay
        self._retry_call: IDelayedCall | None = None
        self._attempt: Deferred[AmqpClient] | None = None
        self._failures = 0
        self._last_failure = ""
        self._stopping = False
        self._closing: Deferred[None] | None = None
        #: The durable work queue jobs are published to (declared at every connect), and its consumer if any.
        self.work_queue = work_queue
        self._work: WorkConsumer | None = None

    # -- the service --

    def startService(self) -> None:
        """Start connecting; the bus keeps (re)connecting until stopped."""
        super().startService()
        self._stopping = False
        self._retry_delay = self._min_retry_delay
        self._failures = 0
        self._last_failure = ""
        self.log.info("AMQP event bus connecting to {url} (exchange {exchange})", url=self.url, exchange=self.exchange)
        self._connect()

    def stopService(self) -> Deferred[None]:
        """Stop reconnecting and close the connection cleanly; fires once it is closed."""
        super().stopService()
        self._stopping = True
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self._wake_waiters(BusUnavailable("the AMQP event bus was stopped"))
        if self._connecting is not None and self._connecting.transport is not None:
            self._connecting.transport.abortConnection()
        if self._attempt is not None:
            self._attempt.cancel()  # still connecting TCP: give up
        if self._client is None:
            return succeed(None)
        if self._closing is None:
            self._closing = ensureDeferred(close_client(self._client, self._reactor, self.log))
        return self._closing

    # -- connecting --

    @property
    def is_connected(self) -> bool:
        """True while connected, with the exchange declared and confirms on."""
        return self._client is not None

    def when_connected(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` now if connected, and again on every later (re)connect.

        Returns a function that unregisters it.  A callback that raises (or
        returns a Deferred that fails) is logged.
        """
        self._on_connect.append(callback)
        if self.is_connected:
            self._call_on_connect(callback)

        def unregister() -> None:
            if callback in self._on_connect:
                self._on_connect.remove(callback)

        return unregister

    def wait_connected(self, fail_fast: bool = False) -> Deferred[None]:
        """Fire once connected (at once if connected now).

        With ``fail_fast``, fail with BusUnavailable instead if the next
        connection attempt fails (a command line tool's "broker unreachable").
        """
        if self.is_connected:
            return succeed(None)
        if self._stopping or not self.running:
            return fail(BusUnavailable("the AMQP event bus is not running"))
        d: Deferred[None] = Deferred()
        self._waiters.append((d, fail_fast))
        return d

    def _connect(self) -> None:
        self._retry_call = None
        endpoint = HostnameEndpoint(
            self._reactor, self._address.host, self._address.port, timeout=self._connect_timeout
        )
        # The factory's protocol is an AmqpClient: connect() is only typed as making an IProtocol.
        attempt = cast(
            "Deferred[AmqpClient]",
            endpoint.connect(AmqpClientFactory(self, self._address.vhost, self._spec, self._heartbeat, self._reactor)),
        )
        self._attempt = attempt
        attempt.addCallback(lambda client: ensureDeferred(self._handshake(client)))
        attempt.addCallbacks(self._connected, self._connect_failed)
        attempt.addErrback(lambda f: self.log.failure("AMQP event bus: unexpected error while connecting", f))

    async def _handshake(self, client: AmqpClient) -> AmqpClient:
        self._attempt = None
        self._connecting = client
        # Why a timer: a peer that accepts TCP but never answers AMQP would
        # otherwise hold the attempt (and the reconnect loop) forever.
        timer = self._reactor.callLater(self._connect_timeout, client.transport.abortConnection)
        try:
            # Why PLAIN with a bytes response, not client.authenticate(): txamqp
            # sizes str fields in characters, not bytes, so non-ASCII user names or
            # passwords would corrupt the frame (and AMQPLAIN cannot take bytes).
            await client.start(
                b"\0" + self._address.username.encode("utf-8") + b"\0" + self._address.password.encode("utf-8"),
                mechanism="PLAIN",
            )
            channel = await client.channel(PUBLISH_CHANNEL)
            await channel.channel_open()
            await channel.exchange_declare(exchange=self._exchange_bytes, type="topic", durable=True)
            await channel.confirm_select()
            if self.work_queue is not None:
                # Declared before any job is published: the default exchange drops a message for no queue.
                await channel.queue_declare(queue=self.work_queue.encode("utf-8"), durable=True)
        except BaseException:
            if client.transport is not None:
                client.transport.abortConnection()
            raise
        finally:
            self._connecting = None
            if timer.active():
                timer.cancel()
        return client

    def _connected(self, client: AmqpClient) -> None:
        if self._stopping:
            client.transport.abortConnection()
            return
        self._client = client
        self._channel = client.channels[PUBLISH_CHANNEL]
        self._confirms.new_channel()
        self._subscriptions.new_connection()
        self._retry_delay = self._min_retry_delay
        after = ""
        if self._failures:
            after = f" after {self._failures} failed attempt{'s' if self._failures > 1 else ''}"
        self._failures = 0
        self._last_failure = ""
        self.log.info(
            "AMQP event bus connected to {url}{after}; exchange {exchange} declared",
            url=self.url,
            after=after,
            exchange=self.exchange,
        )
        # Taken before waking the waiters: one that registers a callback
        # now has it called at once by when_connected, and not twice.
        callbacks = list(self._on_connect)
        self._wake_waiters(None)
        for callback in callbacks:
            self._call_on_connect(callback)

    def _call_on_connect(self, callback: Callable[[], object]) -> None:
        result: Deferred[None] = ensureDeferred(_call(callback))
        result.addErrback(lambda f: self.log.failure("on-connect callback {callback!r} failed", f, callback=callback))

    def _connect_failed(self, failure: Failure) -> None:
        self._attempt = None
        if self._stopping:
            return
        self._failures += 1
        reason = describe(failure)
        delay = self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._max_retry_delay)
        if reason != self._last_failure:
            # Once per new reason, not once per attempt: a broker that is away
            # for an hour would otherwise log 720 lines.
            self.log.warn(
                "AMQP event bus cannot connect to {url}: {reason}; retrying in {delay} s, "
                "then every {max_delay} s at most (logged again only if the reason changes)",
                url=self.url,
                reason=reason,
                delay=delay,
                max_delay=self._max_retry_delay,
            )
            self._last_failure = reason
        self._retry_call = self._reactor.callLater(delay, self._connect)
        self._wake_waiters(BusUnavailable(f"cannot connect to {self.url}: {reason}"), fail_fast_only=True)

    def _wake_waiters(self, error: Exception | None, fail_fast_only: bool = False) -> None:
        # The list is settled before any Deferred fires: a waiter's callbacks
        # may well call back into the bus (stopService, wait_connected).
        waiters, self._waiters = self._waiters, []
        woken = []
        for d, fail_fast in waiters:
            if error is None or fail_fast or not fail_fast_only:
                woken.append(d)
            else:
                self._waiters.append((d, fail_fast))
        for d in woken:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    def connection_lost(self, client: AmqpClient, reason: Any) -> None:
        if client is not self._client:
            return  # told already, or a handshake that failed (_connect_failed reports it)
        self._client = None
        self._channel = None
        self._closing = None
        text = describe(reason)
        unconfirmed = self._confirms.pending
        subscriptions = self._subscriptions.end_all()
        if self._work is not None:
            self._work.end()
        if self._stopping:
            self.log.info("AMQP event bus disconnected from {url}", url=self.url)
        else:
            self.log.warn(
                "AMQP event bus lost its connection to {url} ({reason}); {unconfirmed} publishes "
                "unconfirmed, {subscriptions} subscriptions ended; reconnecting in {delay} s",
                url=self.url,
                reason=text,
                unconfirmed=unconfirmed,
                subscriptions=subscriptions,
                delay=self._min_retry_delay,
            )
            self._retry_delay = self._min_retry_delay
            self._retry_call = self._reactor.callLater(self._min_retry_delay, self._connect)
        # Failed last: the publishers' errbacks may call back into the bus (stop it, even).
        self._confirms.fail_all(BusUnavailable(f"connection to the broker lost before it confirmed the event ({text})"))

    def channel_failed(self, client: AmqpClient, channel: AMQChannel, reason: Failure) -> None:
        text = describe(reason)
        if client is self._client and channel is self._channel:
            # Without its publishing channel the connection is of no use:
            # drop it, and the reconnect declares everything afresh.
            self.log.error(
                "AMQP event bus: the broker closed the publishing channel ({reason}); reconnecting", reason=text
            )
            client.transport.loseConnection()
            return
        self._subscriptions.channel_closed(channel, text)

    # -- publishing --

    def publish(self, event: Event) -> Deferred[None]:
        """Publish ``event``; fire once the broker confirms it, fail with BusUnavailable if not connected."""
        channel = self._channel
        if channel is None or self._client is None or channel.closed:
            return fail(BusUnavailable(f"not connected to the AMQP broker {self.url}"))
        return self._confirms.publish(channel, event)

    def confirmed(
        self, client: AmqpClient, channel: AMQChannel, tag: int, multiple: bool, error: Exception | None
    ) -> None:
        """The broker confirmed ``tag`` (see ``Confirms.confirmed``); ignored unless on the current channel."""
        if client is self._client and channel is self._channel:
            self._confirms.confirmed(tag, multiple, error)

    # -- subscribing --

    def subscribe(self, pattern: str, callback: EventCallback) -> Deferred[ISubscription]:
        """Bind a new exclusive queue with ``pattern`` and consume it; fire with the ISubscription.

        The subscription ends if the connection is lost; fails with
        BusUnavailable when not connected.
        """
        if self._client is None:
            return fail(BusUnavailable(f"not connected to the AMQP broker {self.url}"))
        return ensureDeferred(self._subscriptions.subscribe(self._client, pattern, callback))

    def is_current(self, client: AmqpClient) -> bool:
        """Whether ``client`` holds the bus's connection now (not one lost or still shaking hands)."""
        return client is self._client

    def delivered(self, msg: Message) -> None:
        if self._work is not None and self._work.owns(msg.consumer_tag):
            self._work.delivered(msg)
        else:
            self._subscriptions.delivered(msg)

    def consume_work(self, prefetch: int, handler: JobHandler, retry_delay: float) -> None:
        """Take jobs from ``work_queue`` (at most ``prefetch`` unacknowledged), on every connection from now on."""
        if self.work_queue is None:
            raise ValueError("this bus has no work queue")
        work = self._work = WorkConsumer(self.work_queue, prefetch, handler, self._reactor, retry_delay)
        self.when_connected(lambda: work.start(self._client) if self._client is not None else None)

    def consumer_cancelled_by_broker(self, consumer_tag: str) -> None:
        self._subscriptions.cancelled_by_broker(consumer_tag)


async def _call(callback: Callable[[], object]) -> None:
    result = callback()
    if isinstance(result, Deferred) or hasattr(result, "__await__"):
        await result
