"""Benchmark: status polling of the daemon against a bare twisted.web resource.

Measures requests/second and p50/p99 latency of
``GET /imagefactory/images/<i>/builds/<b>/target_images/<t>/status`` for 64
concurrent keep-alive pollers (wrk, 2 threads) while 20 mock builds run, with
the daemon started as the README starts it (HTTPS with its generated
self-signed certificate, OAuth on, twistd's default logging to stdout), and
in the same run the same load against ``bare_status_server.py`` (a bare
twisted.web resource returning the same JSON over TLS with the same
certificate).  Runs alternate between the two for ``--rounds`` rounds so
that machine noise hits both; the per-round ratio daemon/bare of throughput
and its median are printed.  Target: a ratio of at least 0.8.

This is a benchmark, not a test: it exits 0 whatever the ratio, and
non-zero only when something broke (the daemon did not start or died, a
build was not BUILDING, wrk saw non-2xx responses or socket errors, ...).

Usage: ``.venv/bin/python bench/bench_status_polling.py [--duration 10] [--rounds 3]``
(``--help`` for the rest; ``--profile DIR`` adds one run per server under
py-spy and prints where each spends its time).  Needs ``wrk``; installs it
with apt-get when missing and running as root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from benchlib import BenchError, free_port, start, stop, tail, wait_until_serving
from requests_oauthlib import OAuth1

HERE = os.path.dirname(os.path.abspath(__file__))
BARE_SERVER = os.path.join(HERE, "bare_status_server.py")

CLIENT_KEY = "bench"
CLIENT_SECRET = "bench-secret-not-for-production"
BUILDS = 20
CONNECTIONS = 64
THREADS = 2
TEMPLATE = (
    "<template><name>bench</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os></template>"
)
TARGET_RATIO = 0.8


def count_lines(path: str) -> int:
    """Lines in a file (0 when it does not exist)."""
    try:
        with open(path, "rb") as stream:
            return sum(1 for _ in stream)
    except FileNotFoundError:
        return 0


def ensure_wrk() -> str:
    """The path of wrk, installing Debian's package first when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and this is not root: install it (apt-get install wrk) and rerun")
    print("bench: wrk is missing; installing it with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk could not be installed with apt-get; install it by hand and rerun")
    return found


# -- the daemon ---------------------------------------------------------------


def certificate_only(pem_path: str, out_path: str) -> str:
    """Write the CERTIFICATE blocks of ``pem_path`` (key + certificate) to ``out_path``, for clients to trust."""
    with open(pem_path, encoding="ascii") as stream:
        text = stream.read()
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.DOTALL)
    if not blocks:
        raise BenchError(f"{pem_path} holds no certificate")
    with open(out_path, "w", encoding="ascii") as stream:
        stream.write("\n".join(blocks) + "\n")
    return out_path


def start_daemon(twistd: str, work: str, port: int, config: dict[str, Any]) -> tuple[subprocess.Popen, str, str, str]:
    """The daemon as the README starts it, with ``config``; (process, base URL, CA file, log path).

    twistd -n (default logging to stdout), --rest, a config file, a state
    dir; HTTPS with the generated certificate, OAuth on.
    """
    config_path = os.path.join(work, "imagefactory.conf")
    with open(config_path, "w", encoding="utf-8") as stream:
        json.dump(config, stream)
    os.chmod(config_path, 0o600)
    log = os.path.join(work, "daemon.log")
    process = start(
        [
            twistd,
            "-n",
            "imagefactory",
            "--rest",
            "--config",
            "imagefactory.conf",
            "--state_dir",
            "state",
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        log,
        cwd=work,
    )
    pem = os.path.join(work, "state", "tls", "imagefactory.pem")
    deadline = time.monotonic() + 60
    while not os.path.exists(pem):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise BenchError(f"the daemon made no certificate; last lines of {log}:\n{tail(log)}")
        time.sleep(0.1)
    ca = certificate_only(pem, os.path.join(work, "ca.pem"))
    base = f"https://127.0.0.1:{port}"
    wait_until_serving(base + "/imagefactory", process, log, ca)
    return process, base, ca, log


def post_mock_builds(base: str, ca: str, count: int = BUILDS) -> list[dict[str, Any]]:
    """Start ``count`` mock builds with OAuth-signed POSTs; their target images (JSON documents)."""
    auth = OAuth1(CLIENT_KEY, client_secret=CLIENT_SECRET)
    target_images: list[dict[str, Any]] = []
    with requests.Session() as session:
        for _ in range(count):
            answer = session.post(
                base + "/imagefactory/images",
                data={"template": TEMPLATE, "targets": "mock"},
                auth=auth,
                verify=ca,
                timeout=10,
            )
            if answer.status_code != 202:
                raise BenchError(f"POST /imagefactory/images answered {answer.status_code}: {answer.text[:500]}")
            target_images += answer.json()["build"]["target_images"]
    if len(target_images) != count:
        raise BenchError(f"{count} builds made {len(target_images)} target images, not {count}")
    return target_images


def start_builds(base: str, ca: str) -> list[str]:
    """Start BUILDS mock builds; the URL paths of their target image statuses."""
    return [urlsplit(target_image["href"]).path + "/status" for target_image in post_mock_builds(base, ca)]


def check_statuses(base: str, paths: list[str], ca: str, expected: str, within: float) -> dict[str, Any]:
    """Wait up to ``within`` seconds for every status to be ``expected``; one of the documents."""
    deadline = time.monotonic() + within
    with requests.Session() as session:
        while True:
            statuses = {}
            document: dict[str, Any] = {}
            for path in paths:
                answer = session.get(base + path, verify=ca, timeout=10)
                if answer.status_code != 200:
                    raise BenchError(f"GET {path} answered {answer.status_code}: {answer.text[:500]}")
                document = answer.json()
                statuses[path] = document.get("status")
            wrong = {path: status for path, status in statuses.items() if status != expected}
            if not wrong:
                return document
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"{len(wrong)} of {len(paths)} target images are not {expected}: "
                    + ", ".join(sorted(set(map(str, wrong.values()))))
                )
            time.sleep(0.5)


# -- wrk ------------------------------------------------------------------------


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    output: str
    #: CPU time (user + system, all threads) the server spent per request, in
    #: microseconds; less sensitive than req/s to other load on the machine.
    cpu_us_per_request: float | None = None


LUA = """-- Rotates over the paths; requests are formatted once (in init) so
-- that the client spends as little as possible per request.
local paths = {%s}
local headers = {%s}
local requests = {}
local count = 0
local i = 0

function init(args)
   for k, path in ipairs(paths) do
      requests[k] = wrk.format("GET", path, headers)
   end
   count = #requests
   -- Each thread starts elsewhere in the list.
   i = math.random(count) - 1
end

function request()
   i = i %% count + 1
   return requests[i]
end
"""


def write_lua(path: str, paths: list[str], headers: dict[str, str] | None = None) -> str:
    """A wrk script at ``path`` that GETs ``paths`` in rotation, with ``headers`` on every request."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(
            LUA
            % (
                ", ".join(json.dumps(p) for p in paths),
                ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()),
            )
        )
    return path


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if not match:
        raise BenchError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Requests/sec, p50, p99, request count, non-2xx count and socket errors from wrk's report."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if not rate or not total:
        raise BenchError(f"wrk's output has no Requests/sec line:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()))) if errors else {}
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        output=output,
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            fields = stream.read().rpartition(")")[2].split()
    except OSError:
        return None
    # fields[0] is field 3 of proc(5) (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(wrk: str, url: str, lua: str, duration: float, server_pid: int | None = None) -> WrkResult:
    """One wrk run of ``duration`` seconds against ``url``; BenchError on errors of any kind.

    With ``server_pid``, the server's CPU time per request is measured too.
    """
    cpu_before = cpu_seconds(server_pid) if server_pid else None
    argv = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency", "-s", lua, url]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=duration + 60)
    finally:
        stop(process, grace=5)
    cpu_after = cpu_seconds(server_pid) if server_pid else None
    text = output.decode("utf-8", "replace")
    if process.returncode != 0:
        raise BenchError(f"wrk exited with {process.returncode}:\n{text}")
    result = parse_wrk(text)
    if result.non_2xx:
        raise BenchError(f"wrk saw {result.non_2xx} non-2xx responses from {url}:\n{text}")
    if any(result.socket_errors.values()):
        raise BenchError(f"wrk saw socket errors from {url} ({result.socket_errors}):\n{text}")
    if result.requests == 0:
        raise BenchError(f"wrk made no request to {url}:\n{text}")
    if cpu_before is not None and cpu_after is not None:
        result.cpu_us_per_request = (cpu_after - cpu_before) * 1e6 / result.requests
    return result


# -- profiling ------------------------------------------------------------------

#: Where own (leaf) time goes: the first group whose pattern matches a
#: sample's innermost frame gets it.
OWN_TIME_GROUPS = (
    (
        "logging (access line, twisted.logger)",
        r"twisted/logger/|^msg \(twisted/python/log\.py\)|^_escape \(twisted/web/http\.py\)|LogFormatter|\.log \(",
    ),
    (
        "TLS (pyOpenSSL, twisted.protocols.tls)",
        r"OpenSSL/|twisted/protocols/tls\.py|twisted/internet/_newtls\.py|twisted/protocols/policies\.py|cryptography/",
    ),
    (
        "HTTP (twisted.web.http, LineReceiver)",
        r"twisted/web/http\.py|twisted/web/http_headers\.py|twisted/protocols/basic\.py",
    ),
    ("twisted.web.server / resource", r"twisted/web/server\.py|twisted/web/resource\.py"),
    ("the daemon's code (imgfac_twisted)", r"imgfac_twisted/"),
    ("klein / werkzeug", r"klein/|werkzeug/"),
    ("json", r"/json/"),
    ("reactor, TCP, log context", r"twisted/internet/|twisted/python/"),
    ("other", r""),
)

#: Functions whose inclusive time is reported (regex on ``function (file)``).
INCLUSIVE_OF = (
    ("Request.process (routing + rendering + finishing a request)", r"^Request\.process \(twisted/web/server\.py\)"),
    ("the resource's render", r"^(FactoryRoot|BareStatus)\.render(_GET)? \("),
    ("json.dumps", r"^dumps \(json/"),
    ("Request.finish / write (response out)", r"^Request\.(finish|write) \(twisted/web/"),
    ("HTTP access line (Site.log)", r"^(HTTPFactory\.log|_no_access_log|<lambda>) \(.*(http\.py|site\.py|bare_status)"),
    ("TLS encrypt + send (_flushSendBIO)", r"^TLSMemoryBIOProtocol\._flushSendBIO "),
)


def _frame_key(frame: str) -> str:
    """``function (file:line)`` without the line, so a function's samples add up."""
    return re.sub(r":\d+\)$", ")", frame)


def summarize_profile(raw_path: str, top: int = 15) -> str:
    """Own time by group and by function, and inclusive time of a few functions, from py-spy's raw output.

    Only the main thread, where the reactor serves the requests, is counted.
    """
    own: dict[str, int] = {}
    groups = {name: 0 for name, _ in OWN_TIME_GROUPS}
    inclusive = {name: 0 for name, _ in INCLUSIVE_OF}
    total = other_threads = 0
    with open(raw_path, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame_key(frame) for frame in stack.split(";")]
            if frames[0].startswith("Thread._bootstrap"):
                # Not the reactor's thread (the store's, a pool's): py-spy
                # takes a thread blocked in Condition.wait for a busy one.
                other_threads += count
                continue
            total += count
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for name, pattern in OWN_TIME_GROUPS:
                if re.search(pattern, frames[-1]):
                    groups[name] += count
                    break
            for name, pattern in INCLUSIVE_OF:
                if any(re.search(pattern, frame) for frame in frames):
                    inclusive[name] += count
    if not total:
        return "  (no samples)"
    lines = [
        f"  {total} samples of the main (reactor) thread, idle excluded; "
        f"{other_threads} samples of other threads left out",
        "  own time by group:",
    ]
    lines += [f"    {100 * count / total:5.1f}%  {name}" for name, count in groups.items()]
    lines.append("  own time by function:")
    lines += [
        f"    {100 * count / total:5.1f}%  {frame}"
        for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]
    ]
    lines.append("  inclusive time of:")
    lines += [f"    {100 * count / total:5.1f}%  {name}" for name, count in inclusive.items()]
    return "\n".join(lines)


def profiled_run(wrk: str, url: str, lua: str, duration: float, pid: int, raw_path: str) -> WrkResult:
    """One wrk run while py-spy samples process ``pid`` into ``raw_path`` (collapsed stacks)."""
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if not py_spy:
        raise BenchError("--profile needs py-spy: install it into this venv (pip install py-spy)")
    # Blocking sampling (py-spy pauses the process for each sample): it slows
    # the process a little, but --nonblocking lost half the samples here and
    # under-counted the request handling by half.
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(duration))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            raw_path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        result = run_wrk(wrk, url, lua, duration)
        _, errors = spy.communicate(timeout=duration + 30)
    finally:
        stop(spy, grace=5)
    if spy.returncode != 0 or not os.path.exists(raw_path):
        raise BenchError(f"py-spy failed ({spy.returncode}): {errors.decode('utf-8', 'replace')}")
    return result


# -- the report -------------------------------------------------------------------


def print_table(rows: list[tuple[str, WrkResult | None, WrkResult | None, float]]) -> None:
    """Per round and median: req/s of both, their ratio, p50 and p99 of both."""
    header = (
        f"{'round':>6}  {'daemon req/s':>12}  {'bare req/s':>10}  {'ratio':>5}  "
        f"{'daemon p50':>10}  {'daemon p99':>10}  {'bare p50':>8}  {'bare p99':>8}  "
        f"{'daemon CPU/req':>14}  {'bare CPU/req':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, daemon, bare, ratio in rows:
        assert daemon is not None and bare is not None
        print(
            f"{label:>6}  {daemon.requests_per_second:>12.1f}  {bare.requests_per_second:>10.1f}  {ratio:>5.2f}  "
            f"{daemon.p50_ms:>8.2f}ms  {daemon.p99_ms:>8.2f}ms  {bare.p50_ms:>6.2f}ms  {bare.p99_ms:>6.2f}ms  "
            f"{_us(daemon.cpu_us_per_request):>14}  {_us(bare.cpu_us_per_request):>12}"
        )


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}us"


def median_result(results: list[WrkResult]) -> WrkResult:
    """A WrkResult whose figures are the medians of ``results``."""
    return WrkResult(
        requests_per_second=statistics.median(r.requests_per_second for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=int(statistics.median(r.requests for r in results)),
        non_2xx=0,
        socket_errors={},
        output="",
        cpu_us_per_request=(
            statistics.median(r.cpu_us_per_request for r in results)  # type: ignore[type-var]
            if all(r.cpu_us_per_request is not None for r in results)
            else None
        ),
    )


# -- main -------------------------------------------------------------------------


def run(args: argparse.Namespace, work: str) -> None:
    """The whole benchmark in the temporary directory ``work``."""
    wrk = ensure_wrk()
    bin_dir = os.path.dirname(sys.executable)
    twistd = os.path.join(bin_dir, "twistd")
    if not os.access(twistd, os.X_OK):
        twistd = shutil.which("twistd") or ""
        if not twistd:
            raise BenchError("twistd not found next to this Python nor on PATH: run with the project's venv Python")

    # Builds must outlast every wrk run, warm-ups and checks included.
    measured = 2 * args.warmup + 2 * args.rounds * args.duration
    mock_duration = 2 * measured + 60
    daemon_port, bare_port = free_port(), free_port()
    while bare_port == daemon_port:
        bare_port = free_port()
    bare_log = os.path.join(work, "bare.log")
    daemon = bare = None
    profiles: list[tuple[str, str, WrkResult]] = []
    try:
        daemon, daemon_base, ca, daemon_log = start_daemon(
            twistd,
            work,
            daemon_port,
            {"clients": {CLIENT_KEY: CLIENT_SECRET}, "mock_duration": mock_duration, "max_concurrent_builds": BUILDS},
        )
        pem = os.path.join(work, "state", "tls", "imagefactory.pem")
        print(f"bench: daemon (pid {daemon.pid}) serving {daemon_base}, log {daemon_log}", flush=True)

        paths = start_builds(daemon_base, ca)
        daemon_doc = check_statuses(daemon_base, paths, ca, "BUILDING", within=30)
        print(
            f"bench: {len(paths)} mock builds BUILDING (mock_duration {mock_duration:g}s, "
            f"max_concurrent_builds {BUILDS})",
            flush=True,
        )

        bare_argv = [sys.executable, BARE_SERVER, "--pem", pem, "--port", str(bare_port), "--address", "127.0.0.1"]
        if args.bare_no_access_log:
            bare_argv.append("--no-access-log")
        bare = start(bare_argv, bare_log, cwd=work)
        bare_base = f"https://127.0.0.1:{bare_port}"
        wait_until_serving(bare_base + paths[0], bare, bare_log, ca)
        bare_doc = check_statuses(bare_base, paths, ca, "BUILDING", within=0)
        if set(bare_doc) != set(daemon_doc):
            raise BenchError(f"the bare server's document {bare_doc} is not shaped as the daemon's {daemon_doc}")
        daemon_bytes = requests.get(daemon_base + paths[0], verify=ca, timeout=10)
        bare_bytes = requests.get(bare_base + paths[0], verify=ca, timeout=10)
        print(
            f"bench: bare server (pid {bare.pid}) serving {bare_base}; response bodies {len(daemon_bytes.content)} "
            f"bytes (daemon) and {len(bare_bytes.content)} bytes (bare)",
            flush=True,
        )

        lua = write_lua(os.path.join(work, "status_paths.lua"), paths)
        # The URL gives wrk its host and port; the script supplies the paths.
        daemon_url, bare_url = daemon_base + paths[0], bare_base + paths[0]

        def alive() -> None:
            for name, process, log in (("daemon", daemon, daemon_log), ("bare server", bare, bare_log)):
                assert process is not None
                if process.poll() is not None:
                    raise BenchError(f"the {name} exited with {process.returncode}; last lines of {log}:\n{tail(log)}")

        print(
            f"bench: wrk -t{THREADS} -c{CONNECTIONS} --latency, {len(paths)} status paths in rotation; "
            f"{args.warmup:g}s warm-up each, then {args.rounds} rounds of {args.duration:g}s, "
            "alternating daemon and bare (ABBA order)",
            flush=True,
        )
        if args.warmup > 0:
            run_wrk(wrk, daemon_url, lua, args.warmup)
            run_wrk(wrk, bare_url, lua, args.warmup)
            alive()

        log_lines_before = count_lines(daemon_log)
        daemon_results: list[WrkResult] = []
        bare_results: list[WrkResult] = []
        for round_number in range(1, args.rounds + 1):
            order = [("daemon", daemon_url, daemon.pid), ("bare", bare_url, bare.pid)]
            if round_number % 2 == 0:
                order.reverse()
            for name, url, pid in order:
                result = run_wrk(wrk, url, lua, args.duration, pid)
                alive()
                (daemon_results if name == "daemon" else bare_results).append(result)
                print(
                    f"bench: round {round_number} {name:6}: {result.requests_per_second:9.1f} req/s, "
                    f"p50 {result.p50_ms:.2f}ms, p99 {result.p99_ms:.2f}ms ({result.requests} requests"
                    + (f", {result.cpu_us_per_request:.0f}us CPU/request" if result.cpu_us_per_request else "")
                    + ")",
                    flush=True,
                )
                if args.verbose:
                    print(result.output, flush=True)
        log_lines = count_lines(daemon_log) - log_lines_before

        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
            for name, url, process in (("daemon", daemon_url, daemon), ("bare", bare_url, bare)):
                assert process is not None
                raw = os.path.join(os.path.abspath(args.profile), f"{name}.txt")
                result = profiled_run(wrk, url, lua, args.duration, process.pid, raw)
                alive()
                profiles.append((name, raw, result))

        # The measurement happened "while 20 mock builds run" only if they still do.
        check_statuses(daemon_base, paths, ca, "BUILDING", within=0)
        print(
            f"bench: all {len(paths)} builds still BUILDING after the runs; the daemon logged {log_lines} line(s) "
            f"during the measured runs ({sum(r.requests for r in daemon_results)} requests)",
            flush=True,
        )
    finally:
        stop(bare)
        stop(daemon)

    ratios = [d.requests_per_second / b.requests_per_second for d, b in zip(daemon_results, bare_results)]
    rows: list[tuple[str, WrkResult | None, WrkResult | None, float]] = [
        (str(n), d, b, r) for n, (d, b, r) in enumerate(zip(daemon_results, bare_results, ratios), start=1)
    ]
    ratio = statistics.median(ratios)
    rows.append(("median", median_result(daemon_results), median_result(bare_results), ratio))
    print()
    print(
        f"GET .../target_images/<id>/status, {CONNECTIONS} connections ({THREADS} wrk threads), "
        f"{BUILDS} mock builds BUILDING, HTTPS, {args.rounds} x {args.duration:g}s per server; bare server "
        + ("without" if args.bare_no_access_log else "with")
        + " twisted.web's default access line"
    )
    print_table(rows)
    print()
    for name, raw, result in profiles:
        print()
        print(
            f"profile of the {name} under load ({result.requests_per_second:.1f} req/s while sampled; "
            f"collapsed stacks in {raw}):"
        )
        print(summarize_profile(raw))
    cpu_ratios = [
        b.cpu_us_per_request / d.cpu_us_per_request
        for d, b in zip(daemon_results, bare_results)
        if d.cpu_us_per_request and b.cpu_us_per_request
    ]
    print()
    if len(cpu_ratios) == len(ratios):
        print(
            f"CPU-time ratio (bare/daemon CPU per request, median of rounds): {statistics.median(cpu_ratios):.2f} "
            "(read like the throughput ratio: above 1, the daemon spends less CPU on a request)"
        )
    print(f"ratio (daemon/bare throughput, median of rounds): {ratio:.2f} (target >= {TARGET_RATIO})")


def main(argv: list[str]) -> int:
    """Parse the command line and run; 0 unless something broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run [10]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one run per server [3]")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of an unmeasured run per server [2]")
    parser.add_argument(
        "--bare-no-access-log",
        action="store_true",
        help="run the bare server without twisted.web's access line (the daemon has none)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="after the rounds, one more run per server under py-spy; collapsed stacks to DIR",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, config, state)")
    parser.add_argument("--verbose", action="store_true", help="print wrk's full report of every run")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1, --rounds at least 1, --warmup at least 0")

    work = tempfile.mkdtemp(prefix="imgfac-bench-")
    keep = args.keep
    try:
        run(args, work)
    except BenchError as error:
        keep = True
        print(f"bench: FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"bench: temporary directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
