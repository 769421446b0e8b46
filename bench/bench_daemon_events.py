"""Benchmark: builder events from the state change in the daemon to a consumer, through RabbitMQ.

The daemon (started as the README starts it, plus ``--amqp_url``) runs
``--builds`` mock builds at once; a pika consumer on a queue bound to its
exchange records, for each event, the time from the state change (the
event's ``timestamp``, written in the same transaction as the change) to
receipt: store write, outbox, relay, publisher confirm, broker, consumer.
The baseline, in the same run and to the same broker: the same number of
events published straight to the exchange with pika (no store, no outbox,
no confirms), timed from publish to receipt.  Prints events/s and p50/p99
for both, and the ratios.

A benchmark, not a test: exits 0 whatever the figures (non-zero only if
something broke, e.g. an event went missing).

Usage: ``.venv/bin/python bench/bench_daemon_events.py [--builds 40] [--mock-duration 2]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import pika
import requests
from benchlib import BenchError, free_port, percentile, start, stop, wait_until_serving
from requests_oauthlib import OAuth1

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
TEMPLATE = (
    "<template><name>bench</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os></template>"
)


class Collector(threading.Thread):
    """Consumes a queue bound to ``exchange`` and records (receipt time, body) of each message."""

    def __init__(self, exchange: str) -> None:
        super().__init__(daemon=True)
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._connection = pika.BlockingConnection(pika.URLParameters(BROKER))
        self._channel = self._connection.channel()
        self._channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self._queue = self._channel.queue_declare("", exclusive=True).method.queue
        self._channel.queue_bind(self._queue, exchange, routing_key="#")
        self._stopping = False

    def run(self) -> None:
        for _, _, body in self._channel.consume(self._queue, auto_ack=True, inactivity_timeout=0.2):
            if self._stopping:
                break
            if body is not None:
                self.received.append((time.time(), json.loads(body)))
        self._connection.close()

    def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` messages arrived (or ``timeout`` passed)."""
        self.wait_until(lambda: len(self.received) >= count, timeout)

    def wait_until(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)

    def finish(self) -> None:
        self._stopping = True
        self.join(10)


def through_daemon(args: argparse.Namespace, work: str) -> tuple[int, float, list[float]]:
    """Events of ``args.builds`` mock builds: (count, events/s, state-change-to-receipt latencies in ms)."""
    exchange = f"bench-{uuid.uuid4()}"
    collector = Collector(exchange)
    collector.start()
    port = free_port()
    with open(f"{work}/imagefactory.conf", "w") as config:
        json.dump(
            {
                "clients": {"bench": "bench-secret"},
                "mock_duration": args.mock_duration,
                "max_concurrent_builds": args.builds,
                "amqp_url": BROKER,
                "amqp_exchange": exchange,
            },
            config,
        )
    daemon = start(
        [
            f"{sys.prefix}/bin/twistd",
            "-n",
            "--pidfile=",
            "imagefactory",
            "--rest",
            "--config",
            f"{work}/imagefactory.conf",
            "--state_dir",
            f"{work}/state",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        f"{work}/daemon.log",
        work,
    )
    try:
        base = f"https://127.0.0.1:{port}"
        ca = f"{work}/state/tls/imagefactory.pem"
        wait_until_serving(base + "/imagefactory", daemon, f"{work}/daemon.log", _wait_ca(ca))
        auth = OAuth1("bench", client_secret="bench-secret")
        started = time.time()
        ids = []
        with requests.Session() as session:
            for _ in range(args.builds):
                answer = session.post(
                    base + "/imagefactory/images",
                    auth=auth,
                    verify=ca,
                    timeout=10,
                    data={"targets": "mock", "template": TEMPLATE},
                )
                if answer.status_code != 202:
                    raise BenchError(f"POST answered {answer.status_code}: {answer.text[:300]}")
                ids.append(answer.json()["build"]["target_images"][0]["id"])

        def all_completed() -> bool:
            done = {body["id"] for _, body in list(collector.received) if body["new_status"] == "COMPLETED"}
            return done >= set(ids)

        collector.wait_until(all_completed, timeout=args.mock_duration * 4 + 60)
        finished = max(receipt for receipt, _ in collector.received) if collector.received else time.time()
    finally:
        stop(daemon)
        collector.finish()
    events = [(receipt, body) for receipt, body in collector.received if body["id"] in ids]
    for builder_id in ids:
        sequences = sorted(body["sequence"] for _, body in events if body["id"] == builder_id)
        if not sequences or sequences != list(range(1, sequences[-1] + 1)):
            raise BenchError(f"events of builder {builder_id} are missing: got sequences {sequences}")
    latencies = [(receipt - _epoch(body["timestamp"])) * 1000 for receipt, body in events]
    return len(events), len(events) / (finished - started), latencies


def _wait_ca(path: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path):
                return path
        except FileNotFoundError:
            time.sleep(0.1)
    raise BenchError(f"{path} did not appear")


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def straight_to_broker(count: int) -> tuple[int, float, list[float]]:
    """The baseline: ``count`` events published with pika straight to an exchange, timed to receipt."""
    exchange = f"bench-{uuid.uuid4()}"
    collector = Collector(exchange)
    collector.start()
    connection = pika.BlockingConnection(pika.URLParameters(BROKER))
    channel = connection.channel()
    started = time.time()
    for number in range(count):
        body = json.dumps({"event_id": str(uuid.uuid4()), "sent": time.time(), "sequence": number})
        channel.basic_publish(
            exchange,
            "target_image.build.building",
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )
    connection.close()
    collector.wait_for(count, timeout=60)
    collector.finish()
    finished = max(receipt for receipt, _ in collector.received)
    latencies = [(receipt - body["sent"]) * 1000 for receipt, body in collector.received]
    return len(collector.received), len(collector.received) / (finished - started), latencies


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--builds", type=int, default=40, help="mock builds at once (default 40)")
    parser.add_argument("--mock-duration", type=float, default=2.0, help="seconds a mock build takes (default 2)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-events-") as work:
            daemon = through_daemon(args, work)
        baseline = straight_to_broker(daemon[0])
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print(f"{'path':<44} {'events':>7} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (count, rate, latencies) in (
        ("daemon: state change -> consumer", daemon),
        ("baseline: pika publish -> consumer", baseline),
    ):
        print(
            f"{name:<44} {count:>7} {rate:>9.0f} {statistics.median(latencies):>8.2f} "
            f"{percentile(latencies, 0.99):>8.2f}"
        )
    print(
        f"\nevents/s ratio (daemon/baseline): {daemon[1] / baseline[1]:.3f} "
        f"(the daemon's rate is bounded by how fast {args.builds} mock builds change)"
    )
    print(f"p50 latency ratio (daemon/baseline): {statistics.median(daemon[2]) / statistics.median(baseline[2]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
