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

URLs are ``amqp://user:password@host:port/vhost`` (user, password and vhost
percent-encoded; the default vhost ``/`` is ``%2F``).  They are parsed here,
not by txamqp, whose parser keeps ``%2F`` encoded and rejects explicit ports.
Logs show them through ``redacted_url``: never with the password.
"""

from __future__ import annotations

import json
import os
import uuid
from io import BytesIO
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp import spec as txamqp_spec
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Frame, Method
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQChannel, AMQClient
from txamqp.queue import Closed as QueueClosed
from zope.interface import implementer

from ..redaction import redact_url
from . import Event, EventCallback, IEventBus, ISubscription

#: RabbitMQ's variant of the 0-9-1 spec, from Debian's ``amqp-specs``: the
#: plain 0-9-1 file lacks the ``confirm`` class that publisher confirms need.
DEFAULT_SPEC_PATH = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PORT = 5672

#: The channel that publishes (with confirms); subscriptions get 2, 3, ...
_PUBLISH_CHANNEL = 1


class BusUnavailable(Exception):
    """The bus has no connection to the broker (or lost it before the broker confirmed)."""


class PublishRejected(Exception):
    """The broker refused a message (a ``basic.nack``): it was not stored."""


@dataclass(frozen=True)
class AmqpAddress:
    """Where and as whom to connect, from an ``amqp://`` URL."""

    host: str
    port: int
    username: str
    password: str
    vhost: str

    def __repr__(self) -> str:
        # Keeps the password out of tracebacks and debug output.
        return (f"AmqpAddress(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
                f"password='***', vhost={self.vhost!r})")


def parse_amqp_url(url: str) -> AmqpAddress:
    """Split an ``amqp://user:password@host:port/vhost`` URL; raise ValueError if it is not one.

    User, password and vhost are percent-decoded; the port defaults to 5672,
    the vhost to ``/``, user and password to ``guest``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"not a valid AMQP URL ({e}): {redacted_url(url)}") from None
    if parts.scheme != "amqp":
        raise ValueError(f"an AMQP URL starts with amqp:// (amqps is not supported): {redacted_url(url)}")
    if not parts.hostname:
        raise ValueError(f"an AMQP URL needs a host: {redacted_url(url)}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "/" in path:
        raise ValueError(f"a '/' in the vhost of an AMQP URL must be written %2F: {redacted_url(url)}")
    return AmqpAddress(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=unquote(path) if path else "/",
    )


def redacted_url(url: str) -> str:
    """``url`` fit for logs: ``amqp://user:***@host:port/vhost`` (no password, port and vhost explicit)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        port, host = None, None
    if host is None:
        # Unparseable: keep only the scheme, never what might be credentials.
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        return f"{scheme}://<unparseable>"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = quote(unquote(path) if path else "/", safe="")
    return redact_url(f"{parts.scheme}://{userinfo}{host}:{port if port is not None else DEFAULT_PORT}/{vhost}")


def _describe(reason: Any) -> str:
    """A short, password-free text for why a connection ended."""
    if isinstance(reason, Failure):
        reason = reason.value
    if isinstance(reason, Closed) and reason.args:
        reason = reason.args[0]
    if isinstance(reason, Message):
        try:
            return f"{reason.reply_code} {reason.reply_text}".rstrip(".")
        except AttributeError:
            return str(reason.method)
    if isinstance(reason, Failure):
        reason = reason.value
    lines = str(reason).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(reason).__name__


async def _read_content(queue: Any) -> Content:
    """Read one message's content frames from ``queue``, counting bytes.

    Why not txamqp's ``read_content``: it decodes each body frame to ``str``
    when it is valid UTF-8 and then counts characters, not bytes, against
    the header's size, so a body with multi-byte characters never completes
    and stalls every later frame on the connection.
    """
    header = (await queue.get()).payload
    children = [await _read_content(queue) for _ in range(header.weight)]
    chunks: list[bytes] = []
    received = 0
    while received < header.size:
        chunk = (await queue.get()).payload.content
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        chunks.append(chunk)
        received += len(chunk)
    return Content(b"".join(chunks), children, header.properties.copy())


class _Codec(Codec):
    """txamqp's codec, with tables that may hold booleans, nested tables and non-ASCII text."""

    def encode_table(self, tbl: dict[str, Any]) -> None:
        buf = BytesIO()
        codec = _Codec(buf)
        for key, value in tbl.items():
            codec.encode_shortstr(key.encode("utf-8"))
            if isinstance(value, bool):
                codec.write(b"t")
                codec.encode_octet(1 if value else 0)
            elif isinstance(value, dict):
                codec.write(b"F")
                codec.encode_table(value)
            elif isinstance(value, (str, bytes)):
                codec.write(b"S")
                codec.encode_longstr(value.encode("utf-8") if isinstance(value, str) else value)
            else:
                codec.write(b"I")
                codec.encode_long(value)
        codec.flush()
        encoded = buf.getvalue()
        self.encode_long(len(encoded))
        self.write(encoded)


class _StartOk:
    """``connection.start-ok`` encoded with ``_Codec``, for its nested ``capabilities`` table.

    Why: with ``authentication_failure_close`` announced, RabbitMQ answers
    bad credentials with ``403 ACCESS_REFUSED`` at once; without it, it
    waits 3 s and drops the socket without a word.  (Not a txamqp Payload
    subclass: its metaclass would register it as the decoder of every
    method frame.)
    """

    type = Method.type

    def __init__(self, payload: Method) -> None:
        self.payload = payload

    def encode(self, enc: Codec) -> None:
        buf = BytesIO()
        codec = _Codec(buf)
        codec.encode_short(self.payload.method.klass.id)
        codec.encode_short(self.payload.method.id)
        for field, arg in zip(self.payload.method.fields, self.payload.args):
            codec.encode(field.type, arg)
        codec.flush()
        enc.encode_longbytes(buf.getvalue())


CLIENT_PROPERTIES = {
    "product": "Image Factory on Twisted",
    "platform": "Python/Twisted (txamqp)",
    "connection_name": "imagefactory event bus",
    "capabilities": {"authentication_failure_close": True, "publisher_confirms": True},
}


class _Client(AMQClient):
    """txamqp's client, reporting lost connections and failed channels to the bus."""

    def __init__(self, bus: AmqpBus, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bus = bus

    def send_frame(self, frame: Frame) -> None:
        payload = frame.payload
        if isinstance(payload, Method) and payload.method.klass.name == "connection" \
                and payload.method.name == "start-ok":
            frame = Frame(frame.channel, _StartOk(payload))
        super().send_frame(frame)

    def dispatch(self, queue: Any) -> Deferred:
        return ensureDeferred(self._dispatch(queue))

    async def _dispatch(self, queue: Any) -> None:
        frame = await queue.get()
        channel = await self.channel(frame.channel)
        payload = frame.payload
        content = await _read_content(queue) if payload.method.content else None
        self.delegate.dispatch(channel, Message(payload.method, payload.args, content))

    def channel_failed(self, channel: AMQChannel, reason: Failure) -> None:
        self.bus._channel_failed(self, channel, reason)

    def do_close(self, reason: Any) -> None:
        # Every end of a connection comes here first: the broker's
        # connection.close, our own close, a dropped socket (via
        # connectionLost).  The bus is told before txamqp closes the channels,
        # so that it never looks connected with a closed channel.
        self.bus._connection_lost(self, reason)
        super().do_close(reason)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        # Normally do_close told the bus already; this is the safety net.
        self.bus._connection_lost(self, reason)
        super().connectionLost(reason)


class _Delegate(TwistedDelegate):
    """Handles what the broker sends on its own: confirms and deliveries.

    Why: the stock delegate has no ``basic_ack``/``basic_nack`` handler, and
    the AttributeError that the first publisher confirm then raises closes
    the connection without a word.
    """

    def __init__(self, bus: AmqpBus) -> None:
        super().__init__()
        self.bus = bus

    def connection_start(self, ch: AMQChannel, msg: Message) -> None:
        ch.connection_start_ok(client_properties=CLIENT_PROPERTIES, mechanism=self.client.mechanism,
                               response=self.client.response, locale=self.client.locale)

    def basic_ack(self, ch: AMQChannel, msg: Message) -> None:
        self.bus._confirmed(self.client, ch, msg.delivery_tag, msg.multiple, None)

    def basic_nack(self, ch: AMQChannel, msg: Message) -> None:
        self.bus._confirmed(self.client, ch, msg.delivery_tag, msg.multiple,
                            PublishRejected(f"the broker refused message {msg.delivery_tag}"))

    def basic_deliver(self, ch: AMQChannel, msg: Message) -> None:
        self.bus._delivered(msg)

    def basic_cancel(self, ch: AMQChannel, msg: Message) -> None:
        self.bus._consumer_cancelled_by_broker(msg.consumer_tag)


class _ClientFactory(Factory):
    noisy = False  # the bus logs its own connection states

    def __init__(self, bus: AmqpBus) -> None:
        self.bus = bus

    def buildProtocol(self, addr: Any) -> _Client:  # noqa: N802 (Twisted's name)
        bus = self.bus
        return _Client(bus, delegate=_Delegate(bus), vhost=bus._address.vhost.encode("utf-8"), spec=bus._spec,
                       heartbeat=bus._heartbeat, clock=bus._reactor)


@implementer(ISubscription)
class _AmqpSubscription:
    """One consumer on its own channel and queue; ends with its connection."""

    def __init__(self, bus: AmqpBus, client: _Client, channel: AMQChannel, queue: str, consumer_tag: str,
                 pattern: str, callback: EventCallback) -> None:
        self.bus = bus
        self.client = client
        self.channel = channel
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.pattern = pattern
        self.callback = callback
        self.active = True

    def cancel(self) -> Deferred:
        """Stop delivering at once; fire once the consumer is cancelled and its queue deleted."""
        if not self.active:
            return succeed(None)
        self.active = False
        self.bus._subscriptions.pop(self.consumer_tag, None)
        return ensureDeferred(self._tear_down())

    async def _tear_down(self) -> None:
        if self.client is not self.bus._client or self.channel.closed:
            return  # the connection went, and the broker deleted the queue with it
        try:
            await self.channel.basic_cancel(consumer_tag=self.consumer_tag)
            await self.channel.queue_delete(queue=self.queue)
            await self.bus._close_channel(self.client, self.channel)
        except (Closed, QueueClosed) as e:
            self.bus.log.debug("subscription {pattern!r} ended with its channel: {reason}",
                               pattern=self.pattern, reason=_describe(e))

    def end(self) -> None:
        """The connection or channel went: deliver nothing more."""
        self.active = False


@implementer(IEventBus)
class AmqpBus(Service):
    """Publishes events on a RabbitMQ topic exchange with publisher confirms; subscribes with queues.

    ``heartbeat`` is the AMQP heartbeat in seconds (0: none), so a broker
    that vanishes without closing the socket is noticed; ``connect_timeout``
    bounds each connection attempt, handshake included.
    """

    log = Logger()

    def __init__(self, reactor: Any, url: str, exchange: str = "imagefactory",
                 spec_path: str = DEFAULT_SPEC_PATH, *, heartbeat: int = 30, connect_timeout: float = 10.0,
                 min_retry_delay: float = 0.5, max_retry_delay: float = 5.0) -> None:
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

        self._client: _Client | None = None  # set once the handshake is done
        self._connecting: _Client | None = None  # during the handshake
        self._channel: AMQChannel | None = None  # the publishing channel
        self._unconfirmed: dict[int, Deferred] = {}
        self._last_tag = 0
        self._next_channel_id = _PUBLISH_CHANNEL + 1
        self._subscriptions: dict[str, _AmqpSubscription] = {}
        self._on_connect: list[Callable[[], object]] = []
        self._waiters: list[tuple[Deferred, bool]] = []
        self._retry_delay = min_retry_delay
        self._retry_call: IDelayedCall | None = None
        self._attempt: Deferred | None = None
        self._failures = 0
        self._last_failure = ""
        self._stopping = False
        self._closing: Deferred | None = None

    # -- the service --

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        """Start connecting; the bus keeps (re)connecting until stopped."""
        super().startService()
        self._stopping = False
        self._retry_delay = self._min_retry_delay
        self._failures = 0
        self._last_failure = ""
        self.log.info("AMQP event bus connecting to {url} (exchange {exchange})", url=self.url,
                      exchange=self.exchange)
        self._connect()

    def stopService(self) -> Deferred:  # noqa: N802 (Twisted's name)
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
            self._closing = ensureDeferred(self._close(self._client))
        return self._closing

    async def _close(self, client: _Client) -> None:
        channel0 = await client.channel(0)
        closed = client.disconnected.wait()
        replied = channel0.connection_close(reply_code=200, reply_text="Image Factory event bus stopping")
        timeout = self._reactor.callLater(2.0, replied.cancel)
        try:
            await replied
        except Exception as e:  # noqa: BLE001 -- whatever happened, the socket goes now
            self.log.debug("no clean AMQP close ({reason})", reason=_describe(e))
        finally:
            if timeout.active():
                timeout.cancel()
        client.close()
        if client.transport is not None:
            client.transport.loseConnection()
        await closed

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

    def wait_connected(self, fail_fast: bool = False) -> Deferred:
        """Fire once connected (at once if connected now).

        With ``fail_fast``, fail with BusUnavailable instead if the next
        connection attempt fails (a command line tool's "broker unreachable").
        """
        if self.is_connected:
            return succeed(None)
        if self._stopping or not self.running:
            return fail(BusUnavailable("the AMQP event bus is not running"))
        d: Deferred = Deferred()
        self._waiters.append((d, fail_fast))
        return d

    def _connect(self) -> None:
        self._retry_call = None
        endpoint = HostnameEndpoint(self._reactor, self._address.host, self._address.port,
                                    timeout=self._connect_timeout)
        attempt = endpoint.connect(_ClientFactory(self))
        self._attempt = attempt
        attempt.addCallback(lambda client: ensureDeferred(self._handshake(client)))
        attempt.addCallbacks(self._connected, self._connect_failed)
        attempt.addErrback(lambda f: self.log.failure("AMQP event bus: unexpected error while connecting", f))

    async def _handshake(self, client: _Client) -> _Client:
        self._attempt = None
        self._connecting = client
        # Why a timer: a peer that accepts TCP but never answers AMQP would
        # otherwise hold the attempt (and the reconnect loop) forever.
        timer = self._reactor.callLater(self._connect_timeout, client.transport.abortConnection)
        try:
            # Why PLAIN with a bytes response, not client.authenticate(): txamqp
            # sizes str fields in characters, not bytes, so non-ASCII user names or
            # passwords would corrupt the frame (and AMQPLAIN cannot take bytes).
            await client.start(b"\0" + self._address.username.encode("utf-8") + b"\0"
                               + self._address.password.encode("utf-8"), mechanism="PLAIN")
            channel = await client.channel(_PUBLISH_CHANNEL)
            await channel.channel_open()
            await channel.exchange_declare(exchange=self._exchange_bytes, type="topic", durable=True)
            await channel.confirm_select()
        except BaseException:
            if client.transport is not None:
                client.transport.abortConnection()
            raise
        finally:
            self._connecting = None
            if timer.active():
                timer.cancel()
        return client

    def _connected(self, client: _Client) -> None:
        if self._stopping:
            client.transport.abortConnection()
            return
        self._client = client
        self._channel = client.channels[_PUBLISH_CHANNEL]
        self._last_tag = 0
        self._next_channel_id = _PUBLISH_CHANNEL + 1
        self._retry_delay = self._min_retry_delay
        after = ""
        if self._failures:
            after = f" after {self._failures} failed attempt{'s' if self._failures > 1 else ''}"
        self._failures = 0
        self._last_failure = ""
        self.log.info("AMQP event bus connected to {url}{after}; exchange {exchange} declared",
                      url=self.url, after=after, exchange=self.exchange)
        # Taken before waking the waiters: one that registers a callback
        # now has it called at once by when_connected, and not twice.
        callbacks = list(self._on_connect)
        self._wake_waiters(None)
        for callback in callbacks:
            self._call_on_connect(callback)

    def _call_on_connect(self, callback: Callable[[], object]) -> None:
        result: Deferred = ensureDeferred(_call(callback))
        result.addErrback(lambda f: self.log.failure("on-connect callback {callback!r} failed", f,
                                                     callback=callback))

    def _connect_failed(self, failure: Failure) -> None:
        self._attempt = None
        if self._stopping:
            return
        self._failures += 1
        reason = _describe(failure)
        delay = self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._max_retry_delay)
        if reason != self._last_failure:
            # Once per new reason, not once per attempt: a broker that is away
            # for an hour would otherwise log 720 lines.
            self.log.warn("AMQP event bus cannot connect to {url}: {reason}; retrying in {delay} s, "
                          "then every {max_delay} s at most (logged again only if the reason changes)",
                          url=self.url, reason=reason, delay=delay, max_delay=self._max_retry_delay)
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

    def _connection_lost(self, client: _Client, reason: Any) -> None:
        if client is not self._client:
            return  # told already, or a handshake that failed (_connect_failed reports it)
        self._client = None
        self._channel = None
        self._closing = None
        text = _describe(reason)
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        subscriptions, self._subscriptions = self._subscriptions, {}
        for subscription in subscriptions.values():
            subscription.end()
        if self._stopping:
            self.log.info("AMQP event bus disconnected from {url}", url=self.url)
        else:
            self.log.warn("AMQP event bus lost its connection to {url} ({reason}); {unconfirmed} publishes "
                          "unconfirmed, {subscriptions} subscriptions ended; reconnecting in {delay} s",
                          url=self.url, reason=text, unconfirmed=len(unconfirmed),
                          subscriptions=len(subscriptions), delay=self._min_retry_delay)
            self._retry_delay = self._min_retry_delay
            self._retry_call = self._reactor.callLater(self._min_retry_delay, self._connect)
        for d in unconfirmed.values():
            d.errback(BusUnavailable(f"connection to the broker lost before it confirmed the event ({text})"))

    def _channel_failed(self, client: _Client, channel: AMQChannel, reason: Failure) -> None:
        text = _describe(reason)
        if client is self._client and channel is self._channel:
            # Without its publishing channel the connection is of no use:
            # drop it, and the reconnect declares everything afresh.
            self.log.error("AMQP event bus: the broker closed the publishing channel ({reason}); reconnecting",
                           reason=text)
            client.transport.loseConnection()
            return
        for tag, subscription in list(self._subscriptions.items()):
            if subscription.channel is channel:
                del self._subscriptions[tag]
                subscription.end()
                self.log.error("AMQP event bus: the broker ended the subscription to {pattern!r} ({reason})",
                               pattern=subscription.pattern, reason=text)

    # -- publishing --

    def publish(self, event: Event) -> Deferred:
        """Publish ``event``; fire once the broker confirms it, fail with BusUnavailable if not connected."""
        channel = self._channel
        if channel is None or self._client is None or channel.closed:
            return fail(BusUnavailable(f"not connected to the AMQP broker {self.url}"))
        self._last_tag += 1
        tag = self._last_tag
        confirmed: Deferred = Deferred()
        self._unconfirmed[tag] = confirmed
        content = Content(event.body_bytes(), properties={
            "content-type": "application/json",
            "delivery-mode": 2,
            "message-id": event.event_id,
        })
        # Names go as bytes: txamqp would size a non-ASCII str in characters.
        sent = channel.basic_publish(exchange=self._exchange_bytes, routing_key=event.routing_key.encode("utf-8"),
                                     content=content)
        sent.addErrback(self._publish_failed, tag)
        return confirmed

    def _publish_failed(self, failure: Failure, tag: int) -> None:
        confirmed = self._unconfirmed.pop(tag, None)
        if confirmed is not None:
            confirmed.errback(BusUnavailable(f"could not publish: {_describe(failure)}"))

    def _confirmed(self, client: _Client, channel: AMQChannel, tag: int, multiple: bool,
                   error: Exception | None) -> None:
        if client is not self._client or channel is not self._channel:
            return
        if multiple:
            done = []
            for pending in self._unconfirmed:  # in publishing (tag) order
                if pending > tag:
                    break
                done.append(pending)
        else:
            done = [tag] if tag in self._unconfirmed else []
        for pending in done:
            d = self._unconfirmed.pop(pending, None)
            if d is None:
                continue  # an earlier callback saw the connection go, which failed the rest
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    # -- subscribing --

    def subscribe(self, pattern: str, callback: EventCallback) -> Deferred:
        """Bind a new exclusive queue with ``pattern`` and consume it; fire with the ISubscription.

        The subscription ends if the connection is lost; fails with
        BusUnavailable when not connected.
        """
        if self._client is None:
            return fail(BusUnavailable(f"not connected to the AMQP broker {self.url}"))
        return ensureDeferred(self._subscribe(self._client, pattern, callback))

    async def _subscribe(self, client: _Client, pattern: str, callback: EventCallback) -> _AmqpSubscription:
        channel_id = self._next_channel_id
        self._next_channel_id += 1
        channel = await client.channel(channel_id)
        try:
            await channel.channel_open()
            declared = await channel.queue_declare(queue="", exclusive=True, auto_delete=True)
            queue = declared.queue
            await channel.queue_bind(queue=queue, exchange=self._exchange_bytes, routing_key=pattern.encode("utf-8"))
            tag = f"imagefactory-{uuid.uuid4().hex}"
            subscription = _AmqpSubscription(self, client, channel, queue, tag, pattern, callback)
            # Registered before consuming, so that no delivery can come first.
            if client is self._client:
                self._subscriptions[tag] = subscription
            await channel.basic_consume(queue=queue, consumer_tag=tag, no_ack=True)
        except (Closed, QueueClosed) as e:
            raise BusUnavailable(f"could not subscribe to {pattern!r}: {_describe(e)}") from None
        if client is not self._client or not subscription.active:
            raise BusUnavailable(f"connection lost while subscribing to {pattern!r}")
        self.log.debug("subscribed to {pattern!r} with queue {queue}", pattern=pattern, queue=queue)
        return subscription

    async def _close_channel(self, client: _Client, channel: AMQChannel) -> None:
        await channel.channel_close(reply_code=200, reply_text="subscription cancelled")
        channel.close(None)
        client.channels.pop(channel.id, None)

    def _delivered(self, msg: Message) -> None:
        subscription = self._subscriptions.get(msg.consumer_tag)
        if subscription is None or not subscription.active:
            return  # cancelled: it receives nothing more
        raw = msg.content.body if msg.content is not None else b""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self.log.warn("ignored a message on {exchange} with key {key!r}: not a JSON object ({error})",
                          exchange=self.exchange, key=msg.routing_key, error=str(e))
            return
        try:
            subscription.callback(Event(routing_key=msg.routing_key, body=body))
        except Exception:
            self.log.failure("event subscriber {callback!r} failed", callback=subscription.callback)

    def _consumer_cancelled_by_broker(self, consumer_tag: str) -> None:
        subscription = self._subscriptions.pop(consumer_tag, None)
        if subscription is not None:
            subscription.end()
            self.log.warn("the broker cancelled the subscription to {pattern!r}", pattern=subscription.pattern)


async def _call(callback: Callable[[], object]) -> None:
    result = callback()
    if isinstance(result, Deferred) or hasattr(result, "__await__"):
        await result  # type: ignore[misc]
