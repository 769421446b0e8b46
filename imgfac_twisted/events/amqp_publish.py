"""The AMQP bus's publishing side: each event sent as a persistent message, with publisher confirms.

``Confirms`` numbers the messages published on one channel (the delivery
tags the broker confirms them by) and holds a Deferred per message until
the broker acks it (fire) or nacks it (fail with ``PublishRejected``), or
the connection goes first (fail with ``BusUnavailable``).  Which channel
and connection are current is the bus's business (``amqp``): it hands each
new publishing channel here and reports every confirm it receives.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from txamqp.content import Content
from txamqp.protocol import AMQChannel

from . import Event
from .amqp_wire import BusUnavailable, describe

__all__ = ["Confirms"]


class Confirms:
    """The publishes on one channel that the broker has not confirmed yet, by delivery tag."""

    def __init__(self, exchange: bytes) -> None:
        self._exchange = exchange
        self._unconfirmed: dict[int, Deferred[None]] = {}
        self._last_tag = 0

    def new_channel(self) -> None:
        """Start numbering afresh: a new channel's first publish has delivery tag 1."""
        self._last_tag = 0

    def publish(self, channel: AMQChannel, event: Event) -> Deferred[None]:
        """Send ``event`` on ``channel``; fire once the broker confirms it."""
        self._last_tag += 1
        tag = self._last_tag
        confirmed: Deferred[None] = Deferred()
        self._unconfirmed[tag] = confirmed
        content = Content(
            event.body_bytes(),
            properties={
                "content-type": "application/json",
                "delivery-mode": 2,
                "message-id": event.event_id,
            },
        )
        # Names go as bytes: txamqp would size a non-ASCII str in characters.
        exchange = self._exchange if event.exchange is None else event.exchange.encode("utf-8")
        sent = channel.basic_publish(exchange=exchange, routing_key=event.routing_key.encode("utf-8"), content=content)
        sent.addErrback(self._publish_failed, tag)
        return confirmed

    def _publish_failed(self, failure: Failure, tag: int) -> None:
        confirmed = self._unconfirmed.pop(tag, None)
        if confirmed is not None:
            confirmed.errback(BusUnavailable(f"could not publish: {describe(failure)}"))

    def confirmed(self, tag: int, multiple: bool, error: Exception | None) -> None:
        """The broker acked (``error`` None) or nacked ``tag``, and with ``multiple`` every earlier tag."""
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

    @property
    def pending(self) -> int:
        """How many publishes wait for their confirm."""
        return len(self._unconfirmed)

    def fail_all(self, error: Exception) -> None:
        """Fail every unconfirmed publish with ``error`` (the connection went)."""
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for d in unconfirmed.values():
            d.errback(error)
