"""Builder events from the real daemon on a real RabbitMQ: complete, in order, and never lost.

A durable queue of the test's own, bound to the daemon's exchange before the
daemon starts, collects what is published; pika (a client independent of
the daemon's txamqp) reads it.  Delivery is at least once, so events are
counted once per ``event_id``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from imgfac_twisted.testing import SPEC_TEMPLATE, template_named
from support.daemon import Daemon, DaemonPool, mock_config
from support.event_queue import BROKER, EventQueue, assert_whole_story

EVENT_FIELDS = {
    "event_id",
    "event",
    "_type",
    "id",
    "image_id",
    "build_id",
    "target_image_id",
    "provider_image_id",
    "operation",
    "target",
    "provider",
    "old_status",
    "new_status",
    "completed",
    "status_detail",
    "timestamp",
    "sequence",
    "stage",
}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def queue() -> Iterator[EventQueue]:
    events = EventQueue(f"imagefactory-test-{uuid.uuid4()}")
    yield events
    events.delete()


def amqp_daemon(pool: DaemonPool, queue: EventQueue, **config: Any) -> Daemon:
    return pool.make(mock_config(amqp_url=BROKER, amqp_exchange=queue.exchange, **config))


def build(daemon: Daemon, template: str = SPEC_TEMPLATE) -> str:
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": template})
    assert answer.status_code == 202, answer.text
    return answer.json()["build"]["target_images"][0]["id"]


def test_every_transition_of_a_build_arrives_in_order(daemon_factory: DaemonPool, queue: EventQueue) -> None:
    """A subscriber gets each change of a mock build, in order, with every documented field."""
    daemon = amqp_daemon(daemon_factory, queue)
    builder_id = build(daemon)
    events = queue.wait_for(builder_id, "COMPLETED")
    assert_whole_story(events, "COMPLETED")
    assert [e["new_status"] for e in events if e["event"] == "STATUS"] == ["NEW", "PENDING", "BUILDING", "COMPLETED"]
    progress = [e for e in events if e["event"] == "PERCENTAGE"]
    assert progress and all(e["old_status"] == e["new_status"] == "BUILDING" for e in progress)
    for event in events:
        assert set(event) == EVENT_FIELDS
        assert (event["_type"], event["operation"], event["target"]) == ("target_image", "build", "mock")
        assert event["provider_image_id"] is None and event["target_image_id"] is None
        assert event["timestamp"].endswith("Z")
    routing_key, properties = queue.properties[0]
    assert routing_key == "target_image.build.new"
    assert properties.content_type == "application/json" and properties.delivery_mode == 2


def test_a_failed_build_sends_a_failure_event_with_the_reason(daemon_factory: DaemonPool, queue: EventQueue) -> None:
    """A FAIL template's last event is FAILURE, on a *.*.failed key, carrying the reason."""
    daemon = amqp_daemon(daemon_factory, queue)
    builder_id = build(daemon, template_named("FAIL"))
    events = queue.wait_for(builder_id, "FAILED")
    assert_whole_story(events, "FAILED")
    assert events[-1]["event"] == "FAILURE" and "FAIL" in events[-1]["status_detail"]
    assert ("target_image.build.failed",) == tuple(key for key, _ in queue.properties if key.endswith("failed"))


def test_cutting_the_connection_mid_build_loses_nothing(daemon_factory: DaemonPool, queue: EventQueue) -> None:
    """Closing the daemon's broker connections while it builds loses no event."""
    daemon = amqp_daemon(daemon_factory, queue, mock_duration=4.0)
    builder_id = build(daemon)
    daemon.poll(f"/imagefactory/builders/{builder_id}", lambda doc: doc["completed"] >= 20)
    rabbitmqctl("close_all_connections", "test: cut the daemon off")
    events = queue.wait_for(builder_id, "COMPLETED", timeout=60)
    assert_whole_story(events, "COMPLETED")
    assert "lost" in daemon.log_text() or "connect" in daemon.log_text()


def test_builds_go_on_while_the_broker_is_down_and_every_event_arrives_after(
    daemon_factory: DaemonPool, queue: EventQueue
) -> None:
    """With the broker stopped, builds run and the API answers; once it is back every event arrives."""
    daemon = amqp_daemon(daemon_factory, queue, mock_duration=1.0)
    rabbitmqctl("stop_app")
    try:
        builder_ids = [build(daemon), build(daemon)]
        for builder_id in builder_ids:
            assert daemon.wait_final(f"/imagefactory/builders/{builder_id}")["status"] == "COMPLETED"
        metrics = daemon.get("/metrics").text
        outbox = [line for line in metrics.splitlines() if line.startswith("imagefactory_event_outbox_length")]
        assert outbox and float(outbox[0].split()[-1]) > 0, "the events wait in the outbox"
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    for builder_id in builder_ids:
        assert_whole_story(queue.wait_for(builder_id, "COMPLETED", timeout=60), "COMPLETED")


def test_a_restart_delivers_the_outbox(daemon_factory: DaemonPool, queue: EventQueue) -> None:
    """Events a daemon could not deliver before it was killed are delivered by the next start."""
    daemon = amqp_daemon(daemon_factory, queue, mock_duration=1.0)
    rabbitmqctl("stop_app")
    try:
        builder_id = build(daemon)
        daemon.wait_final(f"/imagefactory/builders/{builder_id}")
        daemon.kill()
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    queue.drain()
    assert queue.of(builder_id) == [], "nothing could be delivered before the kill"
    daemon.start_ready()
    assert_whole_story(queue.wait_for(builder_id, "COMPLETED", timeout=60), "COMPLETED")


def test_the_broker_password_is_never_logged(daemon_factory: DaemonPool, queue: EventQueue) -> None:
    """The amqp_url's password shows nowhere in the daemon's log or output."""
    daemon = amqp_daemon(daemon_factory, queue)
    build(daemon)
    queue.wait_for(next(iter([b["id"] for b in daemon.get_json("/imagefactory/builders")["builders"]])), "COMPLETED")
    assert "guest:guest" not in daemon.log_text() + daemon.output_text()
    assert "guest:***@" in daemon.log_text()
