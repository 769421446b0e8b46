"""Benchmark: a large installation (100 000 builders stored) against a baseline store (20 000), side by side.

For each store size, in the same run: the store is filled before the daemon
starts (mock target image builders inserted through the store, most of them
COMPLETED, one in ten FAILED), the daemon is started once (it makes its
certificate) and stopped, then measured:

* restart: from ``twistd`` launched to ``GET /imagefactory`` answering 200;
* one builder: p50/p99 of ``GET /imagefactory/builders/<id>`` for random ids,
  first reads (the index reads them through from the store) and again (held);
* a page: p50/p99 of ``GET /imagefactory/builders?limit=100&marker=<random id>``;
* the full list: seconds and MB of ``GET /imagefactory/builders``, and while it
  streams (read by curl), the slowest answer to a poller reading one builder
  every 5 ms, beside the same poller's figures with no list running (the
  machine's own noise): how long the reactor was held, about 20 ms at most
  as the issue asks.

The ratio large/baseline is printed per figure.  The issue's figures before
this work, for 20 000 builders: the full list 0.68 s serialised on the
reactor (so a poll waited as long), a restart 1.9 s.

``--store`` ``sqlite``, ``postgres`` or ``both`` (the default): on PostgreSQL
(the server at 127.0.0.1:5432, user postgres, a fresh database per store
size, dropped after) the daemon is an API node (``store_url``; RabbitMQ at
127.0.0.1:5672 for its work queue, unused here).

This is a benchmark, not a test: it exits 0 whatever the figures, non-zero
only when something broke.  Usage:
``.venv/bin/python bench/bench_large.py [--count 100000] [--baseline 20000]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import requests
from bench_status_polling import certificate_only
from benchlib import BenchError, free_port, percentile, start, stop, tail

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from support.many_builders import fill_postgres, fill_sqlite  # noqa: E402
from support.postgres import fresh_database  # noqa: E402

SINGLE_READS = 2000
PAGE_READS = 300
POLL_EVERY = 0.005


def twistd_path() -> str:
    found = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.access(found, os.X_OK):
        raise BenchError("twistd not found next to this Python: run with the project's venv Python")
    return found


class Node:
    """One daemon on a state directory: started, measured, stopped."""

    def __init__(self, work: str, settings: dict[str, Any] | None = None) -> None:
        self.work = work
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        self.log = os.path.join(work, "daemon.log")
        self.ca: str | None = None
        self.process: Any = None
        with open(os.path.join(work, "imagefactory.conf"), "w", encoding="utf-8") as stream:
            config = {"clients": {"bench": "bench-secret-not-for-production"}, "mock_duration": 1.0}
            json.dump({**config, **(settings or {})}, stream)

    def start(self, timeout: float = 120.0) -> float:
        """Start the daemon; seconds until it answers ``GET /imagefactory``."""
        began = time.monotonic()
        argv = [twistd_path(), "-n", "imagefactory", "--rest", "--config", "imagefactory.conf"]
        argv += ["--state_dir", "state", "--port", str(self.port), "--address", "127.0.0.1"]
        self.process = start(argv, self.log, cwd=self.work)
        pem = os.path.join(self.work, "state", "tls", "imagefactory.pem")
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise BenchError(f"the daemon exited; last lines of {self.log}:\n{tail(self.log)}")
            if self.ca is None and os.path.exists(pem):
                time.sleep(0.05)
                self.ca = certificate_only(pem, os.path.join(self.work, "ca.pem"))
            if self.ca is not None:
                try:
                    if requests.get(self.base + "/imagefactory", verify=self.ca, timeout=2).status_code == 200:
                        return time.monotonic() - began
                except requests.RequestException:
                    pass
            time.sleep(0.02)
        raise BenchError(f"the daemon did not serve within {timeout:g} s:\n{tail(self.log)}")

    def stop(self) -> None:
        stop(self.process)

    def session(self) -> requests.Session:
        session = requests.Session()
        # REQUESTS_CA_BUNDLE would otherwise win over the session's own CA.
        session.trust_env = False
        session.verify = self.ca or True
        return session


def timed_gets(session: requests.Session, urls: list[str]) -> list[float]:
    """Milliseconds of each GET (keep-alive), each checked 200."""
    times = []
    for url in urls:
        began = time.perf_counter()
        answer = session.get(url, timeout=30)
        times.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise BenchError(f"GET {url} answered {answer.status_code}: {answer.text[:200]}")
    return times


class Poller:
    """Reads one builder every 5 ms on its own thread, keeping each answer's milliseconds."""

    def __init__(self, node: Node, builder_id: str) -> None:
        self.polls: list[float] = []
        self._done = threading.Event()
        self._url = f"{node.base}/imagefactory/builders/{builder_id}"
        self._session = node.session()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            self.polls.extend(timed_gets(self._session, [self._url]))
            time.sleep(POLL_EVERY)

    def stop(self) -> list[float]:
        self._done.set()
        self._thread.join()
        return self.polls


def full_list(node: Node, builder_id: str) -> dict[str, float]:
    """The whole list's seconds and MB; polls of one builder while it streamed, and for as long with no list
    (this machine's own noise: the difference is what the list costs other clients)."""
    body = os.path.join(node.work, "list.json")
    # curl, in its own process, reads the list: this process's threads would share one GIL with the poller.
    argv = ["curl", "-sS", "--fail", "--cacert", node.ca or "", "-o", body, node.base + "/imagefactory/builders"]
    poller = Poller(node, builder_id)
    time.sleep(0.2)
    try:
        began = time.perf_counter()
        fetched = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - began
    finally:
        during = poller.stop()
    if fetched.returncode != 0:
        raise BenchError(f"curl of the full list failed: {fetched.stderr[-300:]}")
    poller = Poller(node, builder_id)
    time.sleep(seconds)
    idle = poller.stop()
    with open(body, "rb") as stream:
        content = stream.read()
    return {
        "list_s": seconds,
        "list_mb": len(content) / 1e6,
        "listed": float(len(json.loads(content)["builders"])),
        "poll_idle_p99_ms": percentile(idle, 0.99),
        "poll_idle_max_ms": max(idle),
        "poll_list_p99_ms": percentile(during, 0.99),
        "poll_list_max_ms": max(during),
    }


class _Discarding:
    """Enough of a twisted.web request for ``builders_answer``: counts what is written."""

    def __init__(self) -> None:
        self.args: dict[bytes, list[bytes]] = {}
        self.written = 0

    def setResponseCode(self, code: int) -> None:
        pass

    def setHeader(self, name: bytes, value: bytes) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)


def reactor_stall(where: str) -> dict[str, float]:
    """In this process (run once: a reactor runs once): the longest gap between 5 ms ticks of a LoopingCall
    while the full list is made from the store (a state dir's SQLite file, or a PostgreSQL URL) as the daemon
    makes it, and for 1 s before with nothing to do."""
    from twisted.internet import reactor, task
    from twisted.internet.defer import ensureDeferred

    from imgfac_twisted.jobs.index import BuilderIndex
    from imgfac_twisted.store.sqlite import SQLiteStore
    from imgfac_twisted.web.builder_list import ListAsked, builders_answer

    store: Any
    if where.startswith("postgresql://"):
        from imgfac_twisted.store.postgres import PostgresStore

        store, door = PostgresStore.on_own_threads(reactor, where)
    else:
        store, door = SQLiteStore.on_own_thread(reactor, os.path.join(where, "imagefactory.sqlite"))
    door.startService()
    store.thd_open()
    index = BuilderIndex(store, store.thd_list_unfinished_builders())
    gaps: dict[str, float] = {"idle": 0.0, "list": 0.0}
    phase = {"now": "idle", "last": 0.0}
    figures: dict[str, float] = {}
    request = _Discarding()

    def tick() -> None:
        now = time.perf_counter()
        if phase["last"]:
            gaps[phase["now"]] = max(gaps[phase["now"]], now - phase["last"] - POLL_EVERY)
        phase["last"] = now

    async def run() -> None:
        ticker = task.LoopingCall(tick)
        ticker.start(POLL_EVERY)
        await task.deferLater(reactor, 1.0, lambda: None)
        phase["now"] = "list"
        began = time.perf_counter()
        await ensureDeferred(builders_answer(request, index, "https://127.0.0.1:8075", ListAsked()))
        figures["list_in_process_s"] = time.perf_counter() - began
        ticker.stop()

    def go() -> None:
        done = ensureDeferred(run())
        done.addErrback(lambda failure: figures.update(error=1.0) or print(failure.getTraceback(), file=sys.stderr))
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    door.stopService()
    figures.update(stall_idle_ms=gaps["idle"] * 1000, stall_list_ms=gaps["list"] * 1000, stall_mb=request.written / 1e6)
    return figures


def measure(count: int, root: str, postgres_url: str | None = None) -> dict[str, float]:
    """Every figure for a store of ``count`` builders: the state dir's SQLite file, or the database at
    ``postgres_url`` (an API node then, with RabbitMQ at 127.0.0.1 for its work queue)."""
    work = os.path.join(root, f"{'postgres' if postgres_url else 'sqlite'}-{count}")
    os.makedirs(work)
    began = time.monotonic()
    if postgres_url is None:
        ids, settings, where = fill_sqlite(os.path.join(work, "state"), count), {}, os.path.join(work, "state")
    else:
        ids, settings, where = fill_postgres(postgres_url, count), postgres_settings(postgres_url), postgres_url
    figures = {"fill_s": time.monotonic() - began}
    node = Node(work, settings)
    node.start()  # the first start makes the certificate
    node.stop()
    figures["restart_s"] = node.start()
    try:
        session = node.session()
        picked = random.sample(ids, min(SINGLE_READS, len(ids)))
        urls = [f"{node.base}/imagefactory/builders/{builder_id}" for builder_id in picked]
        first, again = timed_gets(session, urls), timed_gets(session, urls)
        figures.update(
            one_first_p50_ms=percentile(first, 0.5),
            one_first_p99_ms=percentile(first, 0.99),
            one_held_p50_ms=percentile(again, 0.5),
            one_held_p99_ms=percentile(again, 0.99),
        )
        markers = random.sample(ids, PAGE_READS)
        pages = timed_gets(session, [f"{node.base}/imagefactory/builders?limit=100&marker={m}" for m in markers])
        figures.update(page100_p50_ms=percentile(pages, 0.5), page100_p99_ms=percentile(pages, 0.99))
        figures.update(full_list(node, ids[0]))
        if figures["listed"] != count:
            raise BenchError(f"the full list had {figures['listed']:g} builders, not {count}")
    finally:
        node.stop()
    stall = subprocess.run([sys.executable, __file__, "--stall", where], capture_output=True, text=True, timeout=600)
    if stall.returncode != 0:
        raise BenchError(f"the in-process stall run failed: {stall.stderr[-1000:]}")
    figures.update(json.loads(stall.stdout.splitlines()[-1]))
    return figures


def postgres_settings(url: str) -> dict[str, Any]:
    """An API node's settings on the PostgreSQL database ``url`` (its own exchange and work queue)."""
    from cryptography.fernet import Fernet

    tag = os.urandom(6).hex()
    return {
        "store_url": url,
        "amqp_url": "amqp://guest:guest@127.0.0.1:5672/",
        "amqp_exchange": f"bench-large-{tag}",
        "amqp_work_queue": f"bench-large-{tag}",
        "job_key": Fernet.generate_key().decode(),
    }


def run(options: argparse.Namespace, root: str, store: str) -> dict[str, float]:
    """Measure the baseline and the large store on ``store``, print them side by side; the large one's figures."""
    if store == "sqlite":
        base, big = measure(options.baseline, root), measure(options.count, root)
    else:
        with fresh_database() as url:
            base = measure(options.baseline, root, url)
        with fresh_database() as url:
            big = measure(options.count, root, url)
    print(f"\n== {store} ==")
    report(options.baseline, options.count, base, big)
    return big


def compare_stores(large: int, sqlite: dict[str, float], postgres: dict[str, float]) -> None:
    """The large store's figures on PostgreSQL (an API node of several) beside the embedded SQLite one's."""
    print(f"\n== {large:,} builders: PostgreSQL API node against the SQLite daemon ==")
    print(f"{'figure':<20}{'sqlite':>14}{'postgres':>14}{'ratio':>10}")
    for name in sqlite:
        ratio = postgres[name] / sqlite[name] if sqlite[name] else float("nan")
        print(f"{name:<20}{sqlite[name]:>14.2f}{postgres[name]:>14.2f}{ratio:>10.2f}")


def report(baseline: int, large: int, base: dict[str, float], big: dict[str, float]) -> None:
    print(f"{'figure':<20}{baseline:>14,}{large:>14,}{'ratio':>10}")
    for name in base:
        ratio = big[name] / base[name] if base[name] else float("nan")
        print(f"{name:<20}{base[name]:>14.2f}{big[name]:>14.2f}{ratio:>10.2f}")
    print(
        f"\nTargets with {large:,}: restart < 5 s ({big['restart_s']:.2f}), one builder p99 < 5 ms "
        f"(first read {big['one_first_p99_ms']:.2f}, held {big['one_held_p99_ms']:.2f}), "
        f"reactor held ~20 ms at most while the list streams (slowest poll {big['poll_list_max_ms']:.1f} ms, "
        f"{big['poll_idle_max_ms']:.1f} ms with no list; in process, the longest gap between 5 ms ticks "
        f"{big['stall_list_ms']:.1f} ms while listing, {big['stall_idle_ms']:.1f} ms idle)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="builders in the large store")
    parser.add_argument("--baseline", type=int, default=20_000, help="builders in the baseline store")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--stall", metavar="STATE_DIR", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.stall:
        print(json.dumps(reactor_stall(options.stall)))
        return 0
    root = tempfile.mkdtemp(prefix="bench-large-")
    try:
        measured = {
            store: run(options, root, store)
            for store in (("sqlite", "postgres") if options.store == "both" else (options.store,))
        }
        if len(measured) == 2:
            compare_stores(options.count, measured["sqlite"], measured["postgres"])
    except BenchError as error:
        print(f"bench_large: {error}", file=sys.stderr)
        return 1
    finally:
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
