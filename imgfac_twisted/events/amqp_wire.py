"""txamqp adapted to RabbitMQ and to the bus: the client protocol, its delegate, its factory and codec.

What is changed from txamqp, and why, is said at each class.  The client
reports what happens on its connection to its owner (the ``AmqpBus``),
through the ``ConnectionOwner`` callbacks.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Frame, Method
from txamqp.content import Content
from txamqp.message import Message
from txamqp.protocol import AMQChannel, AMQClient


class ConnectionOwner(Protocol):
    """What a client tells the bus that owns its connection."""

    def connection_lost(self, client: AmqpClient, reason: Any) -> None:
        """The connection ended (closed by either side, or dropped)."""

    def channel_failed(self, client: AmqpClient, channel: AMQChannel, reason: Failure) -> None:
        """The broker closed a channel."""

    def confirmed(
        self, client: AmqpClient, channel: AMQChannel, tag: int, multiple: bool, error: Exception | None
    ) -> None:
        """The broker confirmed (``error`` None) or refused messages up to ``tag``."""

    def delivered(self, msg: Message) -> None:
        """A subscription's message arrived."""

    def consumer_cancelled_by_broker(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted)."""


class BusUnavailable(Exception):
    """The bus has no connection to the broker (or lost it before the broker confirmed)."""


class PublishRejected(Exception):
    """The broker refused a message (a ``basic.nack``): it was not stored."""


def describe(reason: Any) -> str:
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


async def read_content(queue: Any) -> Content:
    """Read one message's content frames from ``queue``, counting bytes.

    Why not txamqp's ``read_content``: it decodes each body frame to ``str``
    when it is valid UTF-8 and then counts characters, not bytes, against
    the header's size, so a body with multi-byte characters never completes
    and stalls every later frame on the connection.
    """
    header = (await queue.get()).payload
    children = [await read_content(queue) for _ in range(header.weight)]
    chunks: list[bytes] = []
    received = 0
    while received < header.size:
        chunk = (await queue.get()).payload.content
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        chunks.append(chunk)
        received += len(chunk)
    return Content(b"".join(chunks), children, header.properties.copy())


class TableCodec(Codec):
    """txamqp's codec, with tables that may hold booleans, nested tables and non-ASCII text."""

    def encode_table(self, tbl: dict[str, Any]) -> None:
        buf = BytesIO()
        codec = TableCodec(buf)
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


class StartOk:
    """``connection.start-ok`` encoded with ``TableCodec``, for its nested ``capabilities`` table.

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
        codec = TableCodec(buf)
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


class AmqpClient(AMQClient):
    """txamqp's client, reporting lost connections and failed channels to the bus."""

    def __init__(self, bus: ConnectionOwner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bus = bus

    def send_frame(self, frame: Frame) -> None:
        payload = frame.payload
        if (
            isinstance(payload, Method)
            and payload.method.klass.name == "connection"
            and payload.method.name == "start-ok"
        ):
            frame = Frame(frame.channel, StartOk(payload))
        super().send_frame(frame)

    def dispatch(self, queue: Any) -> Deferred[None]:
        return ensureDeferred(self._dispatch(queue))

    async def _dispatch(self, queue: Any) -> None:
        frame = await queue.get()
        channel = await self.channel(frame.channel)
        payload = frame.payload
        content = await read_content(queue) if payload.method.content else None
        self.delegate.dispatch(channel, Message(payload.method, payload.args, content))

    def channel_failed(self, channel: AMQChannel, reason: Failure) -> None:
        self.bus.channel_failed(self, channel, reason)

    def do_close(self, reason: Any) -> None:
        # Every end of a connection comes here first: the broker's
        # connection.close, our own close, a dropped socket (via
        # connectionLost).  The bus is told before txamqp closes the channels,
        # so that it never looks connected with a closed channel.
        self.bus.connection_lost(self, reason)
        super().do_close(reason)

    def connectionLost(self, reason: Failure) -> None:
        # Normally do_close told the bus already; this is the safety net.
        self.bus.connection_lost(self, reason)
        super().connectionLost(reason)


class AmqpDelegate(TwistedDelegate):
    """Handles what the broker sends on its own: confirms and deliveries.

    Why: the stock delegate has no ``basic_ack``/``basic_nack`` handler, and
    the AttributeError that the first publisher confirm then raises closes
    the connection without a word.
    """

    def __init__(self, bus: ConnectionOwner) -> None:
        super().__init__()
        self.bus = bus

    def connection_start(self, ch: AMQChannel, msg: Message) -> None:
        ch.connection_start_ok(
            client_properties=CLIENT_PROPERTIES,
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def basic_ack(self, ch: AMQChannel, msg: Message) -> None:
        self.bus.confirmed(self.client, ch, msg.delivery_tag, msg.multiple, None)

    def basic_nack(self, ch: AMQChannel, msg: Message) -> None:
        self.bus.confirmed(
            self.client,
            ch,
            msg.delivery_tag,
            msg.multiple,
            PublishRejected(f"the broker refused message {msg.delivery_tag}"),
        )

    def basic_deliver(self, ch: AMQChannel, msg: Message) -> None:
        self.bus.delivered(msg)

    def basic_cancel(self, ch: AMQChannel, msg: Message) -> None:
        self.bus.consumer_cancelled_by_broker(msg.consumer_tag)


class AmqpClientFactory(Factory):
    """Makes the one client of a connection attempt, reporting to ``bus``."""

    noisy = False  # the bus logs its own connection states

    def __init__(self, bus: ConnectionOwner, vhost: str, spec: Any, heartbeat: int, clock: Any) -> None:
        self.bus = bus
        self._settings = {"vhost": vhost.encode("utf-8"), "spec": spec, "heartbeat": heartbeat, "clock": clock}

    def buildProtocol(self, addr: Any) -> AmqpClient:
        return AmqpClient(self.bus, delegate=AmqpDelegate(self.bus), **self._settings)


async def close_client(client: AmqpClient, clock: Any, log: Logger) -> None:
    """Close ``client``'s connection cleanly (``connection.close``, 2 s at most), then drop it; fire once closed."""
    channel0 = await client.channel(0)
    closed = client.disconnected.wait()
    replied = channel0.connection_close(reply_code=200, reply_text="Image Factory event bus stopping")
    timeout = clock.callLater(2.0, replied.cancel)
    try:
        await replied
    except Exception as e:
        log.debug("no clean AMQP close ({reason})", reason=describe(e))
    finally:
        if timeout.active():
            timeout.cancel()
    client.close()
    if client.transport is not None:
        client.transport.loseConnection()
    await closed
