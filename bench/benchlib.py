"""What the benchmarks share: free ports, starting and stopping servers, waiting for them, percentiles."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests


class BenchError(Exception):
    """Something broke: the figures would not mean anything."""


# -- processes --------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(argv: list[str], log_path: str, cwd: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``argv`` in a process group of its own, stdout and stderr to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def stop(process: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the process group of ``process``; SIGKILL it if it is not gone within ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def tail(path: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a file, for error reports."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "".join(stream.readlines()[-lines:])
    except OSError as error:
        return f"({path} cannot be read: {error.strerror})"


def wait_until_serving(
    url: str, process: subprocess.Popen, log_path: str, ca: str | None, timeout: float = 60.0
) -> None:
    """Poll ``url`` until it answers 200; BenchError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"{process.args[0]} exited with {process.returncode} before serving; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        try:
            answer = requests.get(url, verify=ca if ca else True, timeout=2)
            if answer.status_code == 200:
                return
            last = f"HTTP {answer.status_code}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.2)
    raise BenchError(f"{url} did not answer within {timeout:g}s ({last}); last lines of {log_path}:\n{tail(log_path)}")


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
