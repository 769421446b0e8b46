"""Builder events: their document, and the bus that carries them.

Every builder change becomes one Event.  It is written to the store's
outbox in the same transaction as the change, and the outbox relay hands it
to an ``IEventBus``: in-process (the default) or AMQP (RabbitMQ).  The bus
fires ``publish``'s Deferred only once the event is safely handed on (for
AMQP: confirmed by the broker), so the relay may then delete it from the
outbox.

Routing keys are ``<object type>.<operation>.<status>``, lower case, e.g.
``target_image.build.building`` or ``provider_image.push.failed``; a
consumer binds ``#`` for everything, ``*.*.failed`` for failures,
``provider_image.#`` for pushes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface

from ..model import Builder, BuilderChange, Operation, iso8601_utc

#: The ``event`` and ``new_status`` of a builder removed with its object (the Conductor API's DELETE).
DELETED = "DELETED"


@dataclass(frozen=True)
class Event:
    """One builder change as published: a routing key and a JSON object body."""

    routing_key: str
    body: dict[str, Any]
    #: The exchange it goes to: None for the bus's event exchange, "" for the default exchange,
    #: which routes it to the queue named by ``routing_key`` (a job for the work queue).
    exchange: str | None = None

    @property
    def event_id(self) -> str:
        event_id: str = self.body["event_id"]
        return event_id

    def to_json(self) -> str:
        """The event as one JSON text (what the outbox keeps)."""
        data: dict[str, Any] = {"routing_key": self.routing_key, "body": self.body}
        if self.exchange is not None:
            data["exchange"] = self.exchange
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Event:
        """The event ``to_json`` wrote."""
        data = json.loads(text)
        return cls(routing_key=data["routing_key"], body=data["body"], exchange=data.get("exchange"))

    def body_bytes(self) -> bytes:
        """The message body as published: the JSON object, UTF-8."""
        return json.dumps(self.body).encode("utf-8")


def event_for_change(change: BuilderChange, timestamp: float) -> Event:
    """The event of one builder change; ``change.new.sequence`` numbers it."""
    new, old = change.new, change.old
    return _builder_event(
        new, change.kind, old.status.value if old is not None else None, new.status.value, new.sequence, timestamp
    )


def event_for_deletion(builder: Builder, timestamp: float) -> Event:
    """The event of a builder removed with its object (a Conductor DELETE): ``DELETED``, the last of its sequence."""
    return _builder_event(builder, DELETED, builder.status.value, DELETED, builder.sequence + 1, timestamp)


def _builder_event(
    builder: Builder, kind: str, old_status: str | None, new_status: str, sequence: int, timestamp: float
) -> Event:
    push = builder.operation == Operation.PUSH
    object_type = "provider_image" if push else "target_image"
    body = {
        "event_id": str(uuid.uuid4()),
        "event": kind,
        "_type": object_type,
        "id": builder.id,
        "image_id": builder.image_id,
        "build_id": builder.build_id,
        "target_image_id": builder.target_image_id,
        "provider_image_id": builder.id if push else None,
        "operation": builder.operation.value,
        "target": builder.target,
        "provider": builder.provider,
        "old_status": old_status,
        "new_status": new_status,
        "completed": builder.completed,
        "status_detail": builder.status_detail,
        "stage": builder.stage.value if builder.stage is not None else None,
        "timestamp": iso8601_utc(timestamp),
        "sequence": sequence,
    }
    routing_key = f"{object_type}.{builder.operation.value}.{new_status.lower()}"
    return Event(routing_key=routing_key, body=body)


EventCallback = Callable[[Event], None]


class ISubscription(Interface):
    """A live subscription to a bus."""

    def cancel() -> Deferred[None]:
        """Stop receiving events; fire once stopped."""


class IEventBus(Interface):
    """Carries events from the factory to whoever subscribed."""

    def publish(event: Event) -> Deferred[None]:
        """Hand ``event`` on; fire once it is safe (broker-confirmed), fail if it is not."""

    def subscribe(pattern: str, callback: EventCallback) -> Deferred[ISubscription]:
        """Call ``callback`` with every later event whose routing key matches ``pattern``.

        ``pattern`` is an AMQP topic pattern (``#`` everything, ``*`` one
        word).  Fires with an ISubscription once events will arrive.
        """
