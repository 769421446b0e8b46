"""One worker against two: the same batch of builds through an API node on PostgreSQL and RabbitMQ.

    .venv/bin/python bench/bench_workers.py [--builds 12] [--rounds 2]

Each round starts, for one and then for two workers, a fresh PostgreSQL
database, a fresh work queue and exchange, one API node (``--rest``) and the
workers (no ``--rest``), all real ``twistd imagefactory`` processes; posts
``--builds`` Mock-OS builds to ``openstack-kvm`` (a real qemu-img conversion
each) and times the batch from the first POST until every builder is
COMPLETED.  Beside them, the same batch on the embedded default (one daemon
on SQLite, doing its own work) is the baseline.  It prints each median and
the ratios.  Both workers run on this one 2-core machine, beside the API
node, PostgreSQL and RabbitMQ: the ratio shows the coordination overhead of
the queue, not more cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import requests
from benchlib import BenchError, free_port, start, stop, tail, wait_until_serving
from cryptography.fernet import Fernet
from requests_oauthlib import OAuth1

TWISTD = str(Path(sys.executable).parent / "twistd")
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
CLIENT = ("bench", "bench-secret")
TEMPLATE = (
    "<template><name>bench</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>m</description></template>"
)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database for one run, dropped after."""
    name = f"imgfac_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def node(work: Path, name: str, config: dict[str, Any], rest: bool) -> tuple[Any, int]:
    """Start one node; its process and port (0 for a worker)."""
    folder = work / name
    folder.mkdir(parents=True)
    (folder / "imagefactory.conf").write_text(json.dumps(config))
    port = free_port() if rest else 0
    argv = [TWISTD, "-n", "--pidfile=", "imagefactory", "--config", str(folder / "imagefactory.conf")]
    argv += ["--state_dir", str(folder / "state"), "--no_ssl"]
    if rest:
        argv += ["--rest", "--port", str(port), "--address", "127.0.0.1"]
    else:
        argv += ["--worker_id", name]
    return start(argv, str(folder / "daemon.log"), str(folder)), port


def run_batch(base: str, builds: int) -> float:
    """Post ``builds`` builds and wait for all; the seconds from the first POST to the last COMPLETED."""
    auth = OAuth1(*CLIENT)
    began = time.monotonic()
    ids = []
    for _ in range(builds):
        answer = requests.post(
            f"{base}/imagefactory/images",
            data={"targets": "openstack-kvm", "template": TEMPLATE},
            auth=auth,
            timeout=30,
        )
        if answer.status_code != 202:
            raise BenchError(f"POST answered {answer.status_code}: {answer.text[:300]}")
        ids.append(answer.json()["build"]["target_images"][0]["id"])
    pending = set(ids)
    deadline = time.monotonic() + 600
    while pending:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} builds not COMPLETED within 600 s")
        for builder_id in list(pending):
            doc = requests.get(f"{base}/imagefactory/builders/{builder_id}", timeout=30).json()
            if doc["status"] == "FAILED":
                raise BenchError(f"builder {builder_id} FAILED: {doc['status_detail']}")
            if doc["status"] == "COMPLETED":
                pending.discard(builder_id)
        time.sleep(0.05)
    return time.monotonic() - began


def shared_config() -> dict[str, Any]:
    """What every node of every run has: the OAuth client, short mock builds, two build slots, no boot test."""
    return {"clients": dict([CLIENT]), "mock_duration": 0.2, "max_concurrent_builds": 2, "boot_test": False}


def time_sqlite(work: Path, builds: int) -> float:
    """The baseline: one daemon on the embedded SQLite store, doing its own work."""
    process, port = node(work, "sqlite", shared_config(), rest=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base + "/imagefactory", process, str(work / "sqlite" / "daemon.log"), None)
        return run_batch(base, builds)
    finally:
        stop(process)


def time_workers(work: Path, builds: int, workers: int) -> float:
    """The batch through one API node and ``workers`` workers on PostgreSQL and RabbitMQ."""
    tag = uuid.uuid4().hex[:10]
    with fresh_database() as url:
        config = {
            **shared_config(),
            "store_url": url,
            "amqp_url": BROKER,
            "amqp_exchange": f"bench-{tag}",
            "amqp_work_queue": f"bench.work.{tag}",
            "job_key": Fernet.generate_key().decode(),
            "image_store": str(work / "images"),
        }
        processes = []
        try:
            api, port = node(work, "api", config, rest=True)
            processes.append(api)
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(base + "/imagefactory", api, str(work / "api" / "daemon.log"), None)
            for number in range(workers):
                processes.append(node(work, f"w{number + 1}", config, rest=False)[0])
            _wait_workers(work, workers)
            return run_batch(base, builds)
        finally:
            for process in processes:
                stop(process)


def _wait_workers(work: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    for number in range(workers):
        log = work / f"w{number + 1}" / "daemon.log"
        while "taking jobs from queue" not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline:
                raise BenchError(f"worker w{number + 1} did not start:\n{tail(str(log))}")
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {"sqlite": [], "1 worker": [], "2 workers": []}
    for round_number in range(args.rounds):
        for label, timer in (
            ("sqlite", lambda work: time_sqlite(work, args.builds)),
            ("1 worker", lambda work: time_workers(work, args.builds, 1)),
            ("2 workers", lambda work: time_workers(work, args.builds, 2)),
        ):
            with tempfile.TemporaryDirectory(prefix="bench-workers-") as folder:
                seconds = timer(Path(folder))
            figures[label].append(seconds)
            print(f"round {round_number + 1}: {label:10} {args.builds} builds in {seconds:6.2f} s", flush=True)
    medians = {label: statistics.median(values) for label, values in figures.items()}
    print()
    for label, seconds in medians.items():
        print(f"{label:10} median {seconds:6.2f} s  ({args.builds / seconds:5.2f} builds/s)")
    print(f"ratio 1 worker / sqlite:    {medians['1 worker'] / medians['sqlite']:.2f}  (the queue's overhead)")
    print(f"ratio 2 workers / 1 worker: {medians['2 workers'] / medians['1 worker']:.2f}  (one 2-core machine)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"benchmark broken: {error}", file=sys.stderr)
        sys.exit(2)
