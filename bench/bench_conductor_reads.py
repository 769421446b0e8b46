"""Conductor API reads (XML, Basic auth) against the factory API's reads of the same objects (JSON).

One daemon, started as the README starts it, with the Conductor API on and
one bcrypt user.  20 mock builds run.  wrk (64 connections) reads the 20
target images in rotation, alternately through
``GET /conductor/api/target_images/<id>`` (Basic auth on every request,
XML) and ``GET /imagefactory/images/.../target_images/<id>`` (no auth,
JSON, the factory's fast path).  It prints requests/s and latency of both
and the ratio conductor / factory (at least 0.8 is the goal: the Conductor
UI polled these reads every 30 s per user).  bcrypt costs tens of
milliseconds by design; the Conductor side stays usable only because a
successful check is remembered for a minute, and a remembered one is
answered on the same reactor turn, which this measures.

    .venv/bin/python bench/bench_conductor_reads.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
from urllib.parse import urlsplit

import bcrypt
import requests
from bench_status_polling import (
    CLIENT_KEY,
    CLIENT_SECRET,
    WrkResult,
    ensure_wrk,
    post_mock_builds,
    run_wrk,
    start_daemon,
    write_lua,
)
from benchlib import BenchError, free_port, stop, tail

USER, PASSWORD = "bench", "bench-password-not-for-production"
BUILDS = 20


def conductor_config(duration: float) -> dict:
    """The daemon's config: OAuth client, long mock builds, the Conductor API with one bcrypt user."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    return {
        "clients": {CLIENT_KEY: CLIENT_SECRET},
        "mock_duration": duration,
        "max_concurrent_builds": BUILDS,
        "conductor": True,
        "conductor_users": {USER: hashed},
    }


def check_both(base: str, ca: str, target_image: dict, basic: str) -> None:
    """Both APIs answer 200 for the same object, in their own media type."""
    xml = requests.get(
        f"{base}/conductor/api/target_images/{target_image['id']}",
        verify=ca,
        timeout=10,
        headers={"Authorization": basic, "Accept": "application/xml"},
    )
    factory = requests.get(target_image["href"], verify=ca, timeout=10)
    if xml.status_code != 200 or b"<target_image" not in xml.content:
        raise BenchError(f"the Conductor read answered {xml.status_code}: {xml.text[:300]}")
    if factory.status_code != 200 or factory.json()["id"] != target_image["id"]:
        raise BenchError(f"the factory read answered {factory.status_code}: {factory.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory() as work:
        daemon = None
        try:
            twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
            daemon, base, ca, log = start_daemon(
                twistd, work, free_port(), conductor_config(4 * options.rounds * options.duration + 120)
            )
            target_images = post_mock_builds(base, ca, BUILDS)
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            check_both(base, ca, target_images[0], basic)
            conductor_lua = write_lua(
                os.path.join(work, "conductor.lua"),
                [f"/conductor/api/target_images/{t['id']}" for t in target_images],
                {"Authorization": basic, "Accept": "application/xml"},
            )
            factory_lua = write_lua(
                os.path.join(work, "factory.lua"), [urlsplit(t["href"]).path for t in target_images], {}
            )
            print(
                f"bench: {BUILDS} mock builds; wrk 64 connections; {options.rounds} rounds of "
                f"{options.duration:g} s, alternating",
                flush=True,
            )
            results: dict[str, list[WrkResult]] = {"conductor": [], "factory": []}
            run_wrk(wrk, base + "/", conductor_lua, 3)  # warm-up: the first bcrypt checks
            for _ in range(options.rounds):
                for name, lua in (("conductor", conductor_lua), ("factory", factory_lua)):
                    results[name].append(run_wrk(wrk, base + "/", lua, options.duration, daemon.pid))
            if daemon.poll() is not None:
                raise BenchError(f"the daemon exited; last lines of {log}:\n{tail(log)}")
            medians = {}
            for name, runs in results.items():
                medians[name] = statistics.median(r.requests_per_second for r in runs)
                p50 = statistics.median(r.p50_ms for r in runs)
                p99 = statistics.median(r.p99_ms for r in runs)
                print(f"  {name:9}  {medians[name]:8.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
            print(f"ratio conductor / factory (req/s) = {medians['conductor'] / medians['factory']:.2f}")
        finally:
            stop(daemon)


if __name__ == "__main__":
    main()
