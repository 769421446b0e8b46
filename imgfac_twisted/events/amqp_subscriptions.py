"""The AMQP bus's subscriptions: each a consumer on its own channel and exclusive queue.

Subscriptions are bound to the connection they were made on: when it is
lost they end, and the subscriber must subscribe again.  Deliveries are not
acknowledged (no_ack): a subscription is a live view, not a work queue.
"""

from __future__ import annotations

import json
import uuid
from typing import Protocol

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from txamqp.client import Closed
from txamqp.message import Message
from txamqp.protocol import AMQChannel
from txamqp.queue import Closed as QueueClosed
from zope.interface import implementer

from . import Event, EventCallback, ISubscription
from .amqp_wire import AmqpClient, BusUnavailable, describe


class ConnectionHolder(Protocol):
    """What the subscriptions ask of their bus."""

    def is_current(self, client: AmqpClient) -> bool:
        """Whether ``client`` holds the bus's connection now."""


@implementer(ISubscription)
class AmqpSubscription:
    """One consumer on its own channel and queue; ends with its connection."""

    def __init__(
        self,
        owner: Subscriptions,
        client: AmqpClient,
        channel: AMQChannel,
        queue: str,
        consumer_tag: str,
        pattern: str,
        callback: EventCallback,
    ) -> None:
        self._owner = owner
        self.client = client
        self.channel = channel
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.pattern = pattern
        self.callback = callback
        self.active = True

    def cancel(self) -> Deferred[None]:
        """Stop delivering at once; fire once the consumer is cancelled and its queue deleted."""
        if not self.active:
            return succeed(None)
        self.active = False
        self._owner.forget(self.consumer_tag)
        return ensureDeferred(self._tear_down())

    async def _tear_down(self) -> None:
        if not self._owner.is_current(self.client) or self.channel.closed:
            return  # the connection went, and the broker deleted the queue with it
        try:
            await self.channel.basic_cancel(consumer_tag=self.consumer_tag)
            await self.channel.queue_delete(queue=self.queue)
            await close_channel(self.client, self.channel)
        except (Closed, QueueClosed) as e:
            self._owner.log.debug(
                "subscription {pattern!r} ended with its channel: {reason}", pattern=self.pattern, reason=describe(e)
            )

    def end(self) -> None:
        """The connection or channel went: deliver nothing more."""
        self.active = False


async def close_channel(client: AmqpClient, channel: AMQChannel) -> None:
    """Close a subscription's channel and forget it on the client."""
    await channel.channel_close(reply_code=200, reply_text="subscription cancelled")
    channel.close(None)
    client.channels.pop(channel.id, None)


class Subscriptions:
    """The live subscriptions of one bus on its current connection, by consumer tag."""

    def __init__(self, bus: ConnectionHolder, exchange: str, first_channel_id: int, log: Logger) -> None:
        self._bus = bus
        self._exchange = exchange
        self._first_channel_id = first_channel_id
        self._next_channel_id = first_channel_id
        self._by_tag: dict[str, AmqpSubscription] = {}
        self.log = log

    def is_current(self, client: AmqpClient) -> bool:
        """Whether ``client`` holds the bus's connection now."""
        return self._bus.is_current(client)

    def new_connection(self) -> None:
        """A new connection numbers its channels afresh."""
        self._next_channel_id = self._first_channel_id

    def forget(self, consumer_tag: str) -> None:
        """Deliver nothing more to the subscription ``consumer_tag`` (it was cancelled)."""
        self._by_tag.pop(consumer_tag, None)

    def end_all(self) -> int:
        """The connection went: end every subscription; how many there were."""
        ended, self._by_tag = self._by_tag, {}
        for subscription in ended.values():
            subscription.end()
        return len(ended)

    def channel_closed(self, channel: AMQChannel, reason: str) -> None:
        """The broker closed a channel: end the subscription on it, if any."""
        for tag, subscription in list(self._by_tag.items()):
            if subscription.channel is channel:
                del self._by_tag[tag]
                subscription.end()
                self.log.error(
                    "AMQP event bus: the broker ended the subscription to {pattern!r} ({reason})",
                    pattern=subscription.pattern,
                    reason=reason,
                )

    async def subscribe(self, client: AmqpClient, pattern: str, callback: EventCallback) -> AmqpSubscription:
        """A new consumer on ``client``'s connection, its queue bound with ``pattern``."""
        channel_id = self._next_channel_id
        self._next_channel_id += 1
        channel = await client.channel(channel_id)
        try:
            await channel.channel_open()
            declared = await channel.queue_declare(queue="", exclusive=True, auto_delete=True)
            queue = declared.queue
            await channel.queue_bind(
                queue=queue, exchange=self._exchange.encode("utf-8"), routing_key=pattern.encode("utf-8")
            )
            tag = f"imagefactory-{uuid.uuid4().hex}"
            subscription = AmqpSubscription(self, client, channel, queue, tag, pattern, callback)
            # Registered before consuming, so that no delivery can come first.
            if self.is_current(client):
                self._by_tag[tag] = subscription
            await channel.basic_consume(queue=queue, consumer_tag=tag, no_ack=True)
        except (Closed, QueueClosed) as e:
            raise BusUnavailable(f"could not subscribe to {pattern!r}: {describe(e)}") from None
        if not self.is_current(client) or not subscription.active:
            raise BusUnavailable(f"connection lost while subscribing to {pattern!r}")
        self.log.debug("subscribed to {pattern!r} with queue {queue}", pattern=pattern, queue=queue)
        return subscription

    def delivered(self, msg: Message) -> None:
        """Hand a delivery to its subscription's callback (a JSON object body, else it is logged and dropped)."""
        subscription = self._by_tag.get(msg.consumer_tag)
        if subscription is None or not subscription.active:
            return  # cancelled: it receives nothing more
        raw = msg.content.body if msg.content is not None else b""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("the body is not a JSON object")
        except ValueError as e:
            self.log.warn(
                "ignored a message on {exchange} with key {key!r}: not a JSON object ({error})",
                exchange=self._exchange,
                key=msg.routing_key,
                error=str(e),
            )
            return
        try:
            subscription.callback(Event(routing_key=msg.routing_key, body=body))
        except Exception:
            self.log.failure("event subscriber {callback!r} failed", callback=subscription.callback)

    def cancelled_by_broker(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted): end its subscription."""
        subscription = self._by_tag.pop(consumer_tag, None)
        if subscription is not None:
            subscription.end()
            self.log.warn("the broker cancelled the subscription to {pattern!r}", pattern=subscription.pattern)
