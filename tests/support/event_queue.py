"""A test's own durable event queue on RabbitMQ, read with pika (a client independent of the daemon's txamqp).

Bound to the daemon's exchange before the daemon starts, it collects every
event published; delivery is at least once, so events are counted once per
``event_id``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"


class EventQueue:
    """A durable queue bound to an exchange with ``#``, read with pika."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.name = f"test-events-{uuid.uuid4()}"
        self.seen: dict[str, dict[str, Any]] = {}
        self.order: list[dict[str, Any]] = []
        self.properties: list[Any] = []
        with self._channel() as channel:
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.name, durable=True)
            channel.queue_bind(self.name, exchange, routing_key="#")

    def _channel(self) -> Any:
        connection = pika.BlockingConnection(pika.URLParameters(BROKER))

        class Channel:
            def __enter__(self_inner) -> Any:
                return connection.channel()

            def __exit__(self_inner, *exc: Any) -> None:
                connection.close()

        return Channel()

    def drain(self) -> None:
        """Take every message waiting in the queue."""
        with self._channel() as channel:
            while True:
                method, properties, body = channel.basic_get(self.name, auto_ack=True)
                if method is None:
                    return
                event = json.loads(body)
                self.properties.append((method.routing_key, properties))
                if event["event_id"] not in self.seen:
                    self.seen[event["event_id"]] = event
                    self.order.append(event)

    def of(self, builder_id: str) -> list[dict[str, Any]]:
        return [event for event in self.order if event["id"] == builder_id]

    def wait_for(self, builder_id: str, final_status: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Every event of a builder, once its ``final_status`` event has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            events = self.of(builder_id)
            if any(event["new_status"] == final_status for event in events):
                return events
            assert time.monotonic() < deadline, f"no {final_status} event for {builder_id}; got {events}"
            time.sleep(0.1)

    def delete(self) -> None:
        with self._channel() as channel:
            channel.queue_delete(self.name)
            channel.exchange_delete(self.exchange)


def assert_whole_story(events: list[dict[str, Any]], final: str) -> None:
    """One builder's events: numbered 1..n without gaps, creation first, the final status last."""
    story = [(event["sequence"], event["old_status"], event["new_status"], event["completed"]) for event in events]
    assert [event["sequence"] for event in events] == list(range(1, len(events) + 1)), story
    assert (events[0]["old_status"], events[0]["new_status"]) == (None, "NEW")
    assert events[-1]["new_status"] == final
    for before, after in zip(events, events[1:]):
        assert after["old_status"] == before["new_status"]
