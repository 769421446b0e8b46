"""Several real nodes sharing PostgreSQL, RabbitMQ and an image store: one or two API nodes and two workers.

Each node is a real ``twistd imagefactory`` process: API nodes with ``--rest``,
workers without it (they serve no HTTP).  Every test has its own database,
exchange and work queue, so nothing is shared with other tests.  Builds are
Mock-OS builds to ``openstack-kvm``: a real qemu-img conversion in each.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
from cryptography.fernet import Fernet

from support.daemon import Daemon, DaemonPool, mock_config, oauth
from support.event_queue import BROKER, EventQueue, assert_whole_story

TEMPLATE = (
    "<template><name>spread</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>m</description></template>"
)
TARGET = "openstack-kvm"


@dataclass
class Cluster:
    """The nodes of one test, and what they share."""

    pool: DaemonPool
    config: dict[str, Any]
    events: EventQueue

    def api(self, name: str = "api", **extra: Any) -> Daemon:
        return self.pool.make({**self.config, **extra}, name=name)

    def worker(self, name: str, **extra: Any) -> Daemon:
        return self.pool.make({**self.config, "worker_id": name, **extra}, name=name, rest=False)


@pytest.fixture
def cluster(daemon_factory: DaemonPool, postgres_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Shared settings for the nodes of one test: its own database, exchange, work queue and image store."""
    tag = uuid.uuid4().hex[:12]
    events = EventQueue(f"imagefactory-multinode-{tag}")
    config = mock_config(
        store_url=postgres_url,
        amqp_url=BROKER,
        amqp_exchange=events.exchange,
        amqp_work_queue=f"imagefactory.work.{tag}",
        job_key=Fernet.generate_key().decode(),
        image_store=str(tmp_path / "images"),
        worker_heartbeat=1.0,
        max_concurrent_builds=1,
        mock_duration=2.0,
    )
    yield Cluster(daemon_factory, config, events)
    daemon_factory.stop_all()
    events.delete()
    connection = pika.BlockingConnection(pika.URLParameters(BROKER))
    try:
        connection.channel().queue_delete(config["amqp_work_queue"])
    finally:
        connection.close()


def start_build(api: Daemon, template: str = TEMPLATE) -> str:
    """POST a build of one target image; its builder's id."""
    answer = api.post("/imagefactory/images", data={"targets": TARGET, "template": template}, timeout=5)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["build"]["target_images"][0]["id"])


def details(node: Daemon, builder_id: str) -> dict[str, Any]:
    return dict(node.get_json(f"/imagefactory/builders/{builder_id}"))


def log_of(node: Daemon, builder_id: str) -> str:
    answer = node.get(f"/imagefactory/builders/{builder_id}/log")
    assert answer.status_code == 200, answer.text
    return answer.text


def wait_running_on_a_worker(api: Daemon, builder_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The builder's details once a worker has claimed it and it is BUILDING."""
    return dict(
        api.poll(
            f"/imagefactory/builders/{builder_id}",
            lambda doc: doc["status"] == "BUILDING" and doc["worker"] is not None,
            timeout=timeout,
        )
    )


def test_builds_spread_over_both_workers_and_every_api_node_sees_the_same(cluster: Cluster) -> None:
    """Builds posted to one API node run on both workers; a second API node shows the same builders and logs."""
    api, api2 = cluster.api(), cluster.api("api2")
    cluster.worker("w1")
    cluster.worker("w2")
    builder_ids = [start_build(api) for _ in range(4)]
    finished = [api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=180) for builder_id in builder_ids]
    assert [doc["status"] for doc in finished] == ["COMPLETED"] * 4, finished
    assert {doc["worker"] for doc in finished} == {"w1", "w2"}, "both workers took builds"
    for builder_id, doc in zip(builder_ids, finished):
        seen = details(api2, builder_id)
        assert (seen["status"], seen["worker"], seen["image_sha256"]) == (
            "COMPLETED",
            doc["worker"],
            doc["image_sha256"],
        )
        log = log_of(api, builder_id)
        assert "BUILDING -> COMPLETED" in log and log == log_of(api2, builder_id)
        assert_whole_story(cluster.events.wait_for(builder_id, "COMPLETED"), "COMPLETED")
    listed = {builder["id"] for builder in api2.get_json("/imagefactory/builders")["builders"]}
    assert set(builder_ids) <= listed


def test_a_new_builder_shows_on_another_api_node_within_a_second(cluster: Cluster) -> None:
    """A builder created on one API node is shown by another at once, and its moves follow within a second."""
    api, api2 = cluster.api(), cluster.api("api2")
    cluster.worker("w1")
    builder_id = start_build(api)
    first = api2.poll(f"/imagefactory/builders/{builder_id}", lambda doc: True, timeout=1.0)
    assert first["id"] == builder_id
    done = api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)
    deadline = time.monotonic() + 1.0
    while details(api2, builder_id)["status"] != done["status"]:
        assert time.monotonic() < deadline, "the other API node did not show the change within a second"
        time.sleep(0.05)


def test_a_killed_worker_s_builder_is_finished_by_the_other(cluster: Cluster) -> None:
    """SIGKILL a worker mid-build: the other worker starts the builder again and completes it."""
    api = cluster.api(mock_duration=8.0)
    workers = {"w1": cluster.worker("w1", mock_duration=8.0), "w2": cluster.worker("w2", mock_duration=8.0)}
    builder_id = start_build(api)
    running = wait_running_on_a_worker(api, builder_id)
    victim = running["worker"]
    workers[victim].kill()
    done = api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=120)
    assert done["status"] == "COMPLETED", done
    assert done["worker"] != victim
    assert "started again on worker" in log_of(api, builder_id)
    unfinished = [
        b for b in api.get_json("/imagefactory/builders")["builders"] if b["status"] in ("BUILDING", "PENDING")
    ]
    assert unfinished == []


def test_a_builder_fails_with_a_reason_once_its_attempts_run_out(cluster: Cluster) -> None:
    """With max_attempts 1, a killed worker's builder ends FAILED, saying why, instead of starting again."""
    api = cluster.api(max_attempts=1)
    workers = {name: cluster.worker(name, max_attempts=1, mock_duration=8.0) for name in ("w1", "w2")}
    builder_id = start_build(api)
    victim = wait_running_on_a_worker(api, builder_id)["worker"]
    workers[victim].kill()
    done = api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)
    assert done["status"] == "FAILED"
    assert f"its worker {victim} stopped answering" in done["status_detail"]


def test_a_cancel_on_an_api_node_stops_the_worker(cluster: Cluster) -> None:
    """DELETE on an API node: FAILED (cancelled) on every node within 10 s, and the work stops moving."""
    api, api2 = cluster.api(), cluster.api("api2")
    worker = cluster.worker("w1", mock_duration=60.0)
    builder_id = start_build(api)
    api.poll(f"/imagefactory/builders/{builder_id}", lambda doc: doc["completed"] > 0, timeout=60)
    answer = api2.delete(f"/imagefactory/builders/{builder_id}")
    assert answer.status_code == 202, answer.text
    for node in (api, api2):
        done = node.poll(f"/imagefactory/builders/{builder_id}", lambda doc: doc["status"] == "FAILED", timeout=10)
        assert done["status_detail"] == "cancelled by a client"
    time.sleep(3)
    assert details(api, builder_id)["completed"] == done["completed"], "completed no longer moves"
    # The worker stopped it: told by the events or its heartbeat, or its next progress report was refused.
    deadline = time.monotonic() + 15
    while not any(f"builder {builder_id} {said}" in worker.log_text() for said in ("stopped here", "ended elsewhere")):
        assert time.monotonic() < deadline, "the worker did not stop the cancelled builder"
        time.sleep(0.2)


def test_restarting_the_api_node_fails_nothing_a_worker_runs(cluster: Cluster) -> None:
    """An API node stopped and started again mid-build: the worker's builder completes."""
    api = cluster.api()
    cluster.worker("w1", mock_duration=6.0)
    builder_id = start_build(api)
    wait_running_on_a_worker(api, builder_id)
    api.restart()
    assert api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)["status"] == "COMPLETED"


def test_the_broker_away_for_30_s_loses_no_job_and_no_event(cluster: Cluster) -> None:
    """RabbitMQ stopped for 30 s mid-build: a POST still answers 202 at once, and every job and event arrives."""
    api = cluster.api()
    cluster.worker("w1", mock_duration=4.0)
    cluster.worker("w2", mock_duration=4.0)
    running = start_build(api)
    wait_running_on_a_worker(api, running)
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    try:
        started = time.monotonic()
        waiting = start_build(api)
        assert time.monotonic() - started < 2.0, "the POST waited for the broker"
        time.sleep(30)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=120)
    for builder_id in (running, waiting):
        assert api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=180)["status"] == "COMPLETED"
        assert_whole_story(cluster.events.wait_for(builder_id, "COMPLETED", timeout=60), "COMPLETED")


def test_a_worker_serves_no_http_and_an_api_node_does_no_work(cluster: Cluster) -> None:
    """Roles: with no worker up, a build waits NEW on the API node; a worker that starts later runs it."""
    api = cluster.api()
    builder_id = start_build(api)
    time.sleep(3)
    assert details(api, builder_id)["status"] == "NEW"
    worker = cluster.worker("late")
    assert "REST API on" not in worker.log_text()
    assert api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)["worker"] == "late"
    worker.stop(signal.SIGTERM)


def test_a_signed_request_replayed_to_another_api_node_is_refused(cluster: Cluster) -> None:
    """Nonces are spent in the shared store: the same signed POST sent to a second node answers 401."""
    api, api2 = cluster.api(), cluster.api("api2")
    prepared = requests.Request(
        "POST", api.url("/imagefactory/images"), data={"targets": TARGET, "template": TEMPLATE}, auth=oauth()
    ).prepare()
    with requests.Session() as session:
        first = session.send(prepared, verify=api.verify, timeout=10)
        assert first.status_code == 202, first.text
        # The same bytes to the other node, addressed as the first (behind one load balancer, they share a name).
        prepared.url = api2.url("/imagefactory/images")
        prepared.headers["Host"] = api.host
        replayed = session.send(prepared, verify=api2.verify, timeout=10)
    assert replayed.status_code == 401, replayed.text
    assert "nonce already used" in replayed.text


def test_an_api_node_with_worker_on_builds_too(cluster: Cluster) -> None:
    """--rest --worker (here "worker": true): one node serves the API and takes the jobs itself."""
    api = cluster.api(worker=True, worker_id="api-and-worker")
    builder_id = start_build(api)
    assert api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)["worker"] == "api-and-worker"


def test_a_push_runs_on_a_worker_with_its_credentials_never_in_clear(cluster: Cluster) -> None:
    """A push posted to an API node runs on a worker (the credentials travel sealed in its job) and reads the
    image from the shared image store; the password shows in no node's log."""
    api = cluster.api()
    worker = cluster.worker("w1")
    builder_id = start_build(api)
    built = api.wait_final(f"/imagefactory/builders/{builder_id}", timeout=60)
    assert built["status"] == "COMPLETED"
    password = "pw-" + uuid.uuid4().hex
    credentials = (
        f"<provider_credentials><mock_credentials><username>pusher</username><password>{password}</password>"
        "</mock_credentials></provider_credentials>"
    )
    target = f"/imagefactory/images/{built['image_id']}/builds/{built['build_id']}/target_images/{builder_id}"
    answer = api.post(f"{target}/provider_images", data={"provider": "mock", "credentials": credentials}, timeout=5)
    assert answer.status_code == 202, answer.text
    pushed = api.wait_final(f"/imagefactory/builders/{answer.json()['id']}", timeout=60)
    assert (pushed["status"], pushed["worker"], pushed["provider_account_identifier"]) == ("COMPLETED", "w1", "pusher")
    for node in (api, worker):
        assert password not in node.log_text()


def test_a_database_that_cannot_be_reached_stops_the_start_without_its_password(
    daemon_factory: DaemonPool, rabbitmq_url: str
) -> None:
    """A store_url nobody answers: the node does not start, names the store, and never shows the password."""
    config = mock_config(
        store_url="postgresql://factory:pg-SECRET-pw@127.0.0.1:1/imagefactory",
        amqp_url=BROKER,
        job_key=Fernet.generate_key().decode(),
    )
    node = daemon_factory.make(config, start=False)
    node.start()
    assert node.process is not None
    node.process.wait(timeout=60)
    assert node.process.returncode != 0
    said = node.output_text() + node.log_text()
    assert "the store postgresql://factory:***@127.0.0.1:1/imagefactory cannot be opened" in said
    assert "pg-SECRET-pw" not in said
