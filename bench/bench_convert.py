"""Benchmark: a target conversion through the daemon against the same ``qemu-img convert`` by hand.

For each target (default: openstack-kvm = qcow2, hyperv = fixed VHD,
vsphere = streamOptimized vmdk) and each round, it builds a template through
the running daemon and, on the very base image that build made, runs the
same conversion by hand; the two alternate (ABBA) so that machine noise hits
both.  It prints the median times, their ratio (hand/daemon: the daemon's
share of qemu-img's throughput), and how long the reactor was blocked: the
latency of a tight ``GET /imagefactory`` poll while the daemon converts,
against the same poll while it is idle.  A last run converts all the
targets of one build in parallel, under the same poll.

The base image must hold real data (a Mock-OS disk is almost empty, and
converting holes measures nothing).  The daemon takes no benchmark knob, so
the bench adds an operating-system plug-in the public way, by entry point:
a throw-away distribution on the daemon's PYTHONPATH whose OS
``BenchPayload`` "installs" by copying (``cp --sparse=always``) a 1 GiB
raw disk holding ``--data-mib`` MiB of random data.

This is a benchmark, not a test: it exits 0 whatever the figures, and
non-zero only when something broke.

Usage: ``.venv/bin/python bench/bench_convert.py [--rounds 4] [--targets openstack-kvm,hyperv,vsphere]
[--data-mib 400] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from benchlib import free_port, percentile
from requests_oauthlib import OAuth1

CLIENT_KEY = "bench"
CLIENT_SECRET = "bench-secret-not-for-production"
GIB = 1024**3
MIB = 1024**2
#: Random data goes into the disk in pieces of this size, spread evenly.
PIECE = 4 * MIB
#: The poller's pause between requests: tight, but leaving the CPU to the work measured.
POLL_PAUSE = 0.005
BUILD_TIMEOUT = 600.0

#: What the daemon runs for each target, and the same conversion by hand (source and target appended).
HAND_COMMANDS = {
    "ec2": ["-O", "raw"],
    "openstack-kvm": ["-O", "qcow2"],
    "rhevm": ["-O", "qcow2", "-o", "compat=0.10"],
    "vsphere": ["-O", "vmdk", "-o", "subformat=streamOptimized"],
    "hyperv": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
}

PLUGIN_MODULE = '''"""An OS plug-in for bench_convert.py: the base image is a copy of a prepared raw disk.

Loaded inside the daemon, it also runs a LoopingCall every 10 ms on the
daemon's reactor and writes how late each tick came ("<monotonic time>
<lateness>" lines, flushed once a second) to IMGFAC_BENCH_LATENESS.
"""
import os
import time

from twisted.internet.task import LoopingCall

from imgfac_twisted.processes import run_process

INTERVAL = 0.01


class LatenessProbe:
    def __init__(self, reactor, path):
        self._path = path
        self._last = None
        self._lines = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._loop.start(INTERVAL)

    def _tick(self):
        now = time.monotonic()
        if self._last is not None:
            self._lines.append(f"{now:.6f} {now - self._last - INTERVAL:.6f}\\n")
        self._last = now
        if len(self._lines) >= 1 / INTERVAL:
            with open(self._path, "a", encoding="ascii") as stream:
                stream.writelines(self._lines)
            self._lines = []


class PayloadOS:
    name = "BenchPayload"

    def __init__(self, environment):
        self._payload = os.environ["IMGFAC_BENCH_PAYLOAD"]
        self._probe = LatenessProbe(environment.reactor, os.environ["IMGFAC_BENCH_LATENESS"])

    def handles(self, template):
        return template.os_name == "BenchPayload"

    def install(self, job):
        job.log("bench payload: copying " + self._payload)
        return run_process(job.reactor, ["cp", "--sparse=always", self._payload, job.image_path], timeout=600)
'''


class BenchError(Exception):
    """Something broke: the figures would not mean anything."""


# -- set-up ----------------------------------------------------------------------


def write_payload(path: str, data_mib: int) -> None:
    """A sparse 1 GiB raw disk with ``data_mib`` MiB of random (incompressible) data spread over it."""
    pieces = max(1, data_mib * MIB // PIECE)
    stride = GIB // pieces // PIECE * PIECE
    with open(path, "wb") as stream:
        stream.truncate(GIB)
        for index in range(pieces):
            stream.seek(index * stride)
            stream.write(os.urandom(PIECE))


def write_plugin(folder: str) -> None:
    """A distribution (module + dist-info) declaring the BenchPayload OS in imgfac_twisted.os."""
    with open(os.path.join(folder, "imgfac_bench_payload.py"), "w", encoding="utf-8") as stream:
        stream.write(PLUGIN_MODULE)
    info = os.path.join(folder, "imgfac_bench_payload-0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as stream:
        stream.write("Metadata-Version: 2.1\nName: imgfac-bench-payload\nVersion: 0\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as stream:
        stream.write("[imgfac_twisted.os]\nbench-payload = imgfac_bench_payload:PayloadOS\n")


def template(name: str) -> str:
    return (
        f"<template><name>{name}</name><os><name>BenchPayload</name><version>1</version><arch>x86_64</arch>"
        "<install type='url'><url>http://example.invalid/</url></install></os>"
        "<disk><size>1</size></disk></template>"
    )


class DaemonProcess:
    """``twistd -n imagefactory --rest`` (plain HTTP on loopback) with the bench's plug-in on its path."""

    def __init__(self, root: str, payload: str, plugins: str) -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.state_dir = os.path.join(root, "state")
        self.log_path = os.path.join(root, "daemon.log")
        config = os.path.join(root, "imagefactory.conf")
        with open(config, "w", encoding="utf-8") as stream:
            json.dump({"clients": {CLIENT_KEY: CLIENT_SECRET}, "max_concurrent_builds": 4}, stream)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        argv = [
            twistd,
            "-n",
            "imagefactory",
            "--rest",
            "--no_ssl",
            "--port",
            str(self.port),
            "--address",
            "127.0.0.1",
            "--config",
            config,
            "--state_dir",
            self.state_dir,
        ]
        self.lateness_path = os.path.join(root, "lateness.txt")
        env = dict(
            os.environ, PYTHONPATH=plugins, IMGFAC_BENCH_PAYLOAD=payload, IMGFAC_BENCH_LATENESS=self.lateness_path
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the daemon exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.base + "/imagefactory", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise BenchError(f"the daemon did not serve within {timeout:g} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon process (all its threads; not its child processes)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stream:
            fields = stream.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


# -- measuring -------------------------------------------------------------------


@dataclass
class Poller:
    """A thread polling ``GET /imagefactory`` as fast as it may; each answer's (start, latency)."""

    url: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.monotonic()
                answer = session.get(self.url, timeout=30)
                if answer.status_code != 200:
                    raise BenchError(f"GET {self.url} answered {answer.status_code}")
                self.samples.append((started, time.monotonic() - started))
                time.sleep(POLL_PAUSE)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class DaemonRun:
    """One target built through the daemon."""

    base_image: str
    #: Seconds the daemon's tools ran (the "done in" lines of the builder log: qemu-img, tar).
    tool_seconds: float
    #: Seconds from the base image being ready to COMPLETED (tools, checks, SHA-256, renames).
    phase_seconds: float
    window: tuple[float, float]
    #: The builder log's lines, each with its time on the poller's (monotonic) clock.
    log: list[tuple[float, str]] = field(default_factory=list)


_DONE_IN = re.compile(r": done in ([0-9.]+) s$")
_STAMP = re.compile(r"^(\S+) ")


def log_seconds(line: str) -> float:
    """The time of a builder log line (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(_STAMP.match(line).group(1).replace("Z", "+00:00")).timestamp()


def build(daemon: DaemonProcess, name: str, targets: list[str]) -> list[dict[str, Any]]:
    """POST a build and wait for all its target images; their final details (BenchError unless COMPLETED)."""
    answer = requests.post(
        daemon.base + "/imagefactory/images",
        data={"template": template(name), "targets": ",".join(targets)},
        auth=OAuth1(CLIENT_KEY, client_secret=CLIENT_SECRET),
        timeout=10,
    )
    if answer.status_code != 202:
        raise BenchError(f"POST /imagefactory/images answered {answer.status_code}: {answer.text[:500]}")
    details = []
    for image in answer.json()["build"]["target_images"]:
        deadline = time.monotonic() + BUILD_TIMEOUT
        while True:
            detail = requests.get(image["href"], timeout=10).json()
            if detail["status"] in ("COMPLETED", "FAILED"):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{image['href']} not done within {BUILD_TIMEOUT:g} s")
            time.sleep(0.1)
        if detail["status"] != "COMPLETED":
            raise BenchError(f"the {detail['target']} build FAILED: {detail.get('status_detail')}")
        details.append(detail)
    return details


def through_daemon(daemon: DaemonProcess, name: str, target: str) -> DaemonRun:
    """Build ``target`` once; its timings from the builder log."""
    # Each measured run starts with nothing left to write back from the one before.
    os.sync()
    detail = build(daemon, name, [target])[0]
    log = requests.get(f"{daemon.base}/imagefactory/builders/{detail['id']}/log", timeout=10).text.splitlines()
    ready = next(line for line in log if " base image " in line)
    done = next(line for line in log if line.endswith("BUILDING -> COMPLETED"))
    tools = sum(float(match.group(1)) for line in log if (match := _DONE_IN.search(line)))
    base_image = os.path.join(daemon.state_dir, "builds", detail["build_id"], "base.raw")
    # Log times are wall-clock; the poller's are monotonic: map them through "now".
    offset = time.monotonic() - time.time()
    return DaemonRun(
        base_image=base_image,
        tool_seconds=tools,
        phase_seconds=log_seconds(done) - log_seconds(ready),
        window=(log_seconds(ready) + offset, log_seconds(done) + offset),
        log=[(log_seconds(line) + offset, line.split(" ", 1)[1]) for line in log],
    )


def by_hand(base_image: str, target: str, out_dir: str) -> float:
    """Seconds the same qemu-img conversion takes run by hand on the same base image."""
    os.sync()
    out = os.path.join(out_dir, "by-hand.out")
    argv = ["qemu-img", "convert", "-p", "-f", "raw", *HAND_COMMANDS[target], base_image, out]
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    os.remove(out)
    return seconds


def latency_line(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} {len(values):>6}  p50 {1000 * percentile(values, 0.5):7.1f} ms  "
        f"p99 {1000 * percentile(values, 0.99):7.1f} ms  max {1000 * max(values, default=float('nan')):7.1f} ms"
    )


# -- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: str) -> None:
    targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in targets if name not in HAND_COMMANDS]
    if unknown:
        raise BenchError(f"no by-hand equivalent for {unknown}: choose among {sorted(HAND_COMMANDS)}")
    payload, plugins = os.path.join(root, "payload.raw"), os.path.join(root, "plugins")
    os.makedirs(plugins)
    print(f"bench: writing a 1 GiB raw disk with {args.data_mib} MiB of random data", flush=True)
    write_payload(payload, args.data_mib)
    write_plugin(plugins)
    daemon = DaemonProcess(root, payload, plugins)
    try:
        daemon.wait_ready()
        poller = Poller(daemon.base + "/imagefactory").start()
        try:
            measure(args, daemon, poller, targets, root)
        finally:
            poller.stop()
    finally:
        daemon.stop()


@dataclass
class Windows:
    """When the daemon was idle, converting one target, or converting several at once (monotonic times)."""

    idle: tuple[float, float] = (0.0, 0.0)
    single: list[tuple[float, float]] = field(default_factory=list)
    parallel: tuple[float, float] = (0.0, 0.0)


def measure(args: argparse.Namespace, daemon: DaemonProcess, poller: Poller, targets: list[str], root: str) -> None:
    windows = Windows()
    idle_start = time.monotonic()
    time.sleep(args.idle)
    windows.idle = (idle_start, time.monotonic())
    hand: dict[str, list[float]] = {name: [] for name in targets}
    runs: dict[str, list[DaemonRun]] = {name: [] for name in targets}
    cpu = {name: 0.0 for name in targets}
    for round_number in range(args.rounds):
        for target in targets:
            # ABBA: the daemon first in even rounds, by hand first in odd ones (on the
            # previous round's base image: every base image is a copy of the same disk).
            hand_first = round_number % 2 == 1
            if hand_first:
                hand[target].append(by_hand(runs[target][-1].base_image, target, root))
            cpu_before = daemon.cpu_seconds()
            daemon_run = through_daemon(daemon, f"bench-{round_number}-{target}", target)
            cpu[target] += daemon.cpu_seconds() - cpu_before
            runs[target].append(daemon_run)
            windows.single.append(daemon_run.window)
            if not hand_first:
                hand[target].append(by_hand(daemon_run.base_image, target, root))
            print(
                f"round {round_number + 1} {target:<14} daemon: tools {daemon_run.tool_seconds:6.2f} s, "
                f"phase {daemon_run.phase_seconds:6.2f} s; by hand {hand[target][-1]:6.2f} s",
                flush=True,
            )
    started = time.monotonic()
    build(daemon, "bench-parallel", targets)
    windows.parallel = (started, time.monotonic())
    time.sleep(1.5)  # the probe writes its ticks once a second
    report_throughput(args, targets, hand, runs)
    print(
        "daemon CPU per build (its own threads: reactor, store, SHA-256 of the image; tools excluded): "
        + ", ".join(f"{target} {cpu[target] / args.rounds:.2f} s" for target in targets)
    )
    all_runs = [run for target_runs in runs.values() for run in target_runs]
    report_stalls("GET /imagefactory latency (one client, a request every 5 ms)", poller.samples, windows, all_runs)
    report_stalls(
        "reactor lateness (a 10 ms LoopingCall in the daemon)", read_lateness(daemon.lateness_path), windows, all_runs
    )
    print(
        f"\nload average of the machine at the end: {open('/proc/loadavg').read().split()[0]} "
        f"({os.cpu_count()} CPUs); other work on it shows as lateness too"
    )


def read_lateness(path: str) -> list[tuple[float, float]]:
    """The probe's (monotonic time, lateness) samples."""
    try:
        with open(path, encoding="ascii") as stream:
            return [(float(when), float(late)) for when, late in (line.split() for line in stream)]
    except FileNotFoundError:
        raise BenchError(f"the daemon's lateness probe wrote nothing to {path}") from None


def within(samples: list[tuple[float, float]], *windows: tuple[float, float]) -> list[tuple[float, float]]:
    return [(when, value) for when, value in samples if any(start <= when <= end for start, end in windows)]


def report_throughput(
    args: argparse.Namespace, targets: list[str], hand: dict[str, list[float]], runs: dict[str, list[DaemonRun]]
) -> None:
    """The table of conversion times: by hand, in the daemon, their ratio."""
    print(f"\n{args.data_mib} MiB of data in a 1 GiB raw base image; medians of {args.rounds} rounds\n")
    print(
        f"{'target':<14} {'by hand':>9} {'daemon qemu-img':>16} {'ratio hand/daemon':>18} "
        f"{'daemon phase':>13} {'MB/s hand':>10} {'MB/s daemon':>12}"
    )
    mb = args.data_mib * MIB / 1e6
    for target in targets:
        hand_s = statistics.median(hand[target])
        tool_s = statistics.median(run.tool_seconds for run in runs[target])
        phase_s = statistics.median(run.phase_seconds for run in runs[target])
        # The ratio of each round's pair (same machine state), then their median.
        ratio = statistics.median(h / run.tool_seconds for h, run in zip(hand[target], runs[target]))
        print(
            f"{target:<14} {hand_s:8.2f}s {tool_s:15.2f}s {ratio:18.2f} {phase_s:12.2f}s "
            f"{mb / hand_s:10.1f} {mb / tool_s:12.1f}"
        )
    print(
        "\n'daemon qemu-img': the tools' run time in the daemon (ProcessProtocol, -p progress parsed);"
        "\n'daemon phase': base image ready -> COMPLETED (conversion, qemu-img info checks, SHA-256, rename)."
    )


def report_stalls(title: str, samples: list[tuple[float, float]], windows: Windows, runs: list[DaemonRun]) -> None:
    """p50, p99 and max of ``samples`` when idle, during single conversions and during the parallel one."""
    print(f"\n{title}:")
    single = within(samples, *windows.single)
    for label, chosen in (
        ("idle", within(samples, windows.idle)),
        ("one conversion at a time", single),
        ("all targets in parallel", within(samples, windows.parallel)),
    ):
        print(latency_line(label, [value for _, value in chosen]))
    if single:
        when, value = max(single, key=lambda sample: sample[1])
        lines = [(at, line) for run in runs for at, line in run.log if at <= when + value]
        at, line = max(lines, default=(when, "(none)"))
        print(f"  the worst ({1000 * value:.1f} ms) came {when - at:.2f} s after the builder log line: {line[:110]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--targets", default="openstack-kvm,hyperv,vsphere")
    parser.add_argument("--data-mib", type=int, default=400)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle polling for the baseline")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("qemu-img") is None:
        print("bench: qemu-img is missing (apt-get install qemu-utils)", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="bench-convert-")
    failed = True
    try:
        run(args, root)
        failed = False
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
    finally:
        if args.keep or failed:
            print(f"bench: files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
