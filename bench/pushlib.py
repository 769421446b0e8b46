"""What the push benchmarks share (bench_push.py, bench_push_glance.py, bench_push_vsphere.py).

The daemon's signed API, starting a daemon whose ``provider_dir`` defines one provider, building a
Mock-OS target image and finding its file, the daemon's memory figures, the push through the daemon,
the alternating daemon/direct rounds, the report of medians and their ratio, and ``main``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import requests
from benchlib import BenchError, free_port, start, tail
from requests_oauthlib import OAuth1

CLIENT_KEY = "bench"
CLIENT_SECRET = "bench-secret-not-for-production"
MIB = 1024 * 1024


def wait_port(port: int, process: subprocess.Popen[bytes], log: str, timeout: float = 30.0) -> None:
    """Wait until something listens on ``port``; BenchError if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the process on {port} exited with {process.returncode}:\n{tail(log)}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise BenchError(f"nothing listens on {port} after {timeout:g} s:\n{tail(log)}")


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0; needs the right to write clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


class Api:
    """The daemon's REST API, signed like any client."""

    def __init__(self, base: str, ca: str) -> None:
        self.base, self.ca = base, ca
        self.auth = OAuth1(CLIENT_KEY, CLIENT_SECRET)

    def post(self, path: str, data: dict[str, str]) -> requests.Response:
        return requests.post(self.url(path), data=data, auth=self.auth, verify=self.ca, timeout=30)

    def get(self, path: str) -> Any:
        answer = requests.get(self.url(path), verify=self.ca, timeout=30)
        if answer.status_code != 200:
            raise BenchError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def text(self, path: str) -> str:
        return requests.get(self.url(path), verify=self.ca, timeout=30).text

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else self.base + path

    def wait_final(self, href: str, timeout: float, interval: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            document: dict[str, Any] = self.get(href)
            if document["status"] in ("COMPLETED", "FAILED"):
                return document
            if time.monotonic() > deadline:
                raise BenchError(f"{href} not final after {timeout:g} s: {document}")
            time.sleep(interval)


def start_daemon(work: str, provider: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Api]:
    """A daemon in ``work`` whose provider_dir holds ``provider`` (a provider file's JSON), serving."""
    providers = os.path.join(work, "providers")
    os.makedirs(providers)
    with open(os.path.join(providers, f"{provider['name']}.json"), "w", encoding="utf-8") as stream:
        json.dump(provider, stream)
    with open(os.path.join(work, "imagefactory.conf"), "w", encoding="utf-8") as stream:
        json.dump({"clients": {CLIENT_KEY: CLIENT_SECRET}, "provider_dir": providers, "mock_duration": 0.2}, stream)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    port = free_port()
    log = os.path.join(work, "daemon.log")
    argv = [twistd, "-n", "imagefactory", "--rest", "--config", "imagefactory.conf", "--state_dir", "state"]
    daemon = start([*argv, "--port", str(port), "--address", "127.0.0.1"], log, work)
    wait_port(port, daemon, log)
    return daemon, Api(f"https://127.0.0.1:{port}", os.path.join(work, "state", "tls", "imagefactory.pem"))


def artifact_path(work: str, builder_id: str) -> str:
    """The file of builder ``builder_id``, read from the daemon's SQLite state (read-only)."""
    db = sqlite3.connect(f"file:{os.path.join(work, 'state', 'imagefactory.sqlite')}?mode=ro", uri=True)
    try:
        ((artifact,),) = db.execute("SELECT artifact_path FROM builders WHERE id = ?", (builder_id,))
    finally:
        db.close()
    return str(artifact)


def built_target(api: Api, work: str, targets: str, template: str) -> tuple[str, str]:
    """A COMPLETED Mock-OS target image for ``targets``: its href and its file's path."""
    answer = api.post("/imagefactory/images", {"targets": targets, "template": template})
    if answer.status_code != 202:
        raise BenchError(f"build refused: {answer.status_code} {answer.text[:300]}")
    target = answer.json()["build"]["target_images"][0]
    built = api.wait_final(target["href"], 300)
    if built["status"] != "COMPLETED":
        raise BenchError(f"the build FAILED: {built.get('status_detail')}")
    return target["href"], artifact_path(work, target["id"])


def random_image(path: str, mib: int, convert: list[str]) -> int:
    """``mib`` MiB of random data at ``path``, through ``qemu-img convert`` options ``convert``; its size."""
    raw = path + ".raw"
    with open(raw, "wb") as stream:
        for _ in range(mib):
            stream.write(os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", *convert, raw, path + ".partial"], check=True)
    os.remove(raw)
    os.replace(path + ".partial", path)
    return os.path.getsize(path)


def push_document(api: Api, target_href: str, provider: str, credentials: str, timeout: float) -> dict[str, Any]:
    """Push ``target_href`` to ``provider`` through the daemon; its final document (COMPLETED or FAILED)."""
    answer = api.post(target_href + "/provider_images", {"provider": provider, "credentials": credentials})
    if answer.status_code != 202:
        raise BenchError(f"push refused: {answer.status_code} {answer.text[:300]}")
    document: dict[str, Any] = api.wait_final(answer.json()["href"], timeout)
    return document


def daemon_push(api: Api, target_href: str, provider: str, credentials: str) -> tuple[float, str]:
    """Push through the daemon; (seconds from request to COMPLETED, identifier on the provider)."""
    begun = time.monotonic()
    document = push_document(api, target_href, provider, credentials, 1800)
    took = time.monotonic() - begun
    if document["status"] != "COMPLETED":
        raise BenchError(f"the push FAILED: {document.get('status_detail')}")
    return took, str(document["identifier_on_provider"])


def alternating(rounds: int) -> list[str]:
    """``daemon`` and ``direct`` ``rounds`` times each, the order swapped every round (neither always first)."""
    order: list[str] = []
    for round_number in range(rounds):
        order += ["daemon", "direct"] if round_number % 2 == 0 else ["direct", "daemon"]
    return order


def with_peak(pid: int, push: Callable[[], Any]) -> tuple[Any, int, int]:
    """Run ``push`` with process ``pid``'s VmHWM reset first; (its result, RSS before, peak during)."""
    rss = proc_status(pid, "VmRSS")
    reset_peak(pid)
    result = push()
    return result, rss, proc_status(pid, "VmHWM")


def report_ratio(daemon_rates: list[float], direct_rates: list[float], direct_label: str, digits: int = 1) -> None:
    """Print both medians (MB/s) and their ratio, ``direct_label`` naming the direct way."""
    daemon_rate, direct_rate = statistics.median(daemon_rates), statistics.median(direct_rates)
    print(f"daemon push (request to COMPLETED): {daemon_rate:.{digits}f} MB/s (median of {len(daemon_rates)})")
    print(f"{direct_label + ':':35s} {direct_rate:.{digits}f} MB/s (median of {len(direct_rates)})")
    print(f"ratio daemon/direct: {daemon_rate / direct_rate:.2f}")


def main(parser: argparse.ArgumentParser, argv: list[str], prefix: str, run: Callable[[Any, str], None]) -> int:
    """Parse ``argv`` (``--keep`` added), ``run`` in a temporary directory; 1 and the files kept if it broke."""
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix=prefix)
    failed = False
    try:
        run(args, work)
    except BenchError as error:
        failed = True
        print(f"bench: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep or failed:
            print(f"bench: files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(
    rounds: int,
    pid: int,
    daemon: Callable[[], tuple[float, str]],
    direct: Callable[[int], tuple[float, str]],
    landed: Callable[[str], None],
    mb: float,
) -> tuple[dict[str, list[float]], list[int]]:
    """Push ``mb`` MB ``rounds`` times each way, alternating; each upload checked by ``landed`` (then removed).

    ``daemon`` pushes through the daemon (process ``pid``, its VmHWM reset first), ``direct`` (given the
    push's number) from here; both answer (seconds, identifier on the provider).  The MB/s of each way,
    and the daemon's peaks.
    """
    rates: dict[str, list[float]] = {"daemon": [], "direct": []}
    peaks: list[int] = []
    for number, which in enumerate(alternating(rounds)):
        extra = ""
        if which == "daemon":
            (took, identifier), rss, peak = with_peak(pid, daemon)
            peaks.append(peak)
            extra = f"RSS before {rss / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB"
        else:
            took, identifier = direct(number)
        landed(identifier)
        rates[which].append(mb / took)
        print(f"bench: {which:6s} {took:7.2f} s  {mb / took:7.1f} MB/s  {extra}", flush=True)
    return rates, peaks
