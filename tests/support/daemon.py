"""Launcher for the real ``twistd imagefactory`` daemon, used by the integration tests.

A :class:`Daemon` runs ``twistd -n --pidfile= --logfile <tmp>/twistd.log
imagefactory --rest ...`` as a subprocess with its own state directory, config
file and free loopback port.  Everything that waits on it is bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
from requests_oauthlib import OAuth1

TWISTD = Path(sys.executable).parent / "twistd"

#: The OAuth clients every test daemon knows (spec example plus an awkward key).
CLIENTS = {"client1": "our-secret", "weird key/é": "s2"}
CLIENT_KEY = "client1"
CLIENT_SECRET = "our-secret"

READY_TIMEOUT = 30.0
#: What a worker without --rest logs once it takes jobs (it has no HTTP to poll).
WORKER_READY = "taking jobs from queue"
STOP_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def oauth(
    signature_method: str = "HMAC-SHA1", key: str = CLIENT_KEY, secret: str = CLIENT_SECRET, **kwargs: Any
) -> OAuth1:
    """An independent OAuth 1.0a (two-legged) signer for write requests."""
    return OAuth1(key, secret, signature_method=signature_method, **kwargs)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class DaemonError(AssertionError):
    """The daemon did not start or stop as expected (carries its log tail)."""


class Daemon:
    """One ``twistd imagefactory`` subprocess and the files it uses."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None = None,
        extra_args: Iterable[str] = (),
        ssl: bool = True,
        port: int | None = None,
        write_config: bool = True,
        use_config: bool = True,
        rest: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / "state"
        self.config_path = self.workdir / "imagefactory.conf"
        self.log_path = self.workdir / "twistd.log"
        self.output_path = self.workdir / "twistd.out"
        self.config = {"clients": dict(CLIENTS), "mock_duration": 0.5} if config is None else dict(config)
        self.extra_args = list(extra_args)
        self.use_config = use_config
        #: False for a build worker, which serves no HTTP (a node of several on PostgreSQL).
        self.rest = rest
        self.ssl = ssl
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._output = None
        if write_config:
            self.config_path.write_text(json.dumps(self.config), encoding="utf-8")

    # -- addresses -------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.ssl else "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def url(self, path: str = "/imagefactory", host: str | None = None) -> str:
        """The absolute URL of ``path`` (an absolute href is returned unchanged)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.scheme}://{host or self.host}{path}"

    @property
    def pem_path(self) -> Path:
        """The self-signed certificate the daemon generates (and that clients verify against)."""
        return self.state_dir / "tls" / "imagefactory.pem"

    @property
    def verify(self) -> str | bool:
        return str(self.pem_path) if self.ssl else True

    @property
    def sqlite_path(self) -> Path:
        return self.state_dir / "imagefactory.sqlite"

    # -- process ---------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(TWISTD),
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.log_path),
            "imagefactory",
            *(["--rest", "--port", str(self.port), "--address", "127.0.0.1"] if self.rest else []),
            "--state_dir",
            str(self.state_dir),
            *(["--config", str(self.config_path)] if self.use_config else []),
            *([] if self.ssl else ["--no_ssl"]),
            *self.extra_args,
        ]

    def start(self) -> Daemon:
        """Start the subprocess (without waiting for it to serve)."""
        assert self.process is None or self.process.poll() is not None, "daemon already running"
        self._output = open(self.output_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=str(self.workdir),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Daemon:
        """Poll GET /imagefactory (TLS verified) until it answers 200 (a worker: until it takes jobs);
        raise with the log tail if not."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.rest and self.running() and WORKER_READY in self.log_text():
                return self
            if not self.running():
                raise DaemonError(
                    f"daemon exited with status {self.process.returncode if self.process else None} "
                    f"before serving\n{self.diagnostics()}"
                )
            if self.rest and (not self.ssl or self.pem_path.exists()):
                try:
                    answer = requests.get(self.url("/imagefactory"), verify=self.verify, timeout=2)
                    if answer.status_code == 200:
                        return self
                    last_error = AssertionError(f"GET /imagefactory answered {answer.status_code}")
                except requests.RequestException as error:
                    last_error = error
            time.sleep(0.05)
        raise DaemonError(f"daemon not ready within {timeout} s (last error: {last_error!r})\n{self.diagnostics()}")

    def start_ready(self) -> Daemon:
        return self.start().wait_ready()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` and wait for the exit; SIGKILL if it does not exit in time. Returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
                raise DaemonError(
                    f"daemon did not exit within {timeout} s of signal {sig}\n{self.diagnostics()}"
                ) from None
        if self._output is not None:
            self._output.close()
            self._output = None
        return self.process.returncode

    def kill(self) -> int | None:
        """kill -9: no shutdown code runs."""
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> Daemon:
        self.stop(sig)
        return self.start_ready()

    # -- output ----------------------------------------------------------

    def log_text(self) -> str:
        """The whole twistd log file (empty if not written yet)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def output_text(self) -> str:
        """What the process wrote on stdout/stderr."""
        try:
            return self.output_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines: int = 60) -> str:
        return (
            f"--- command: {' '.join(self.command())}\n"
            f"--- stdout/stderr tail ({self.output_path}):\n{tail(self.output_text(), lines)}\n"
            f"--- log tail ({self.log_path}):\n{tail(self.log_text(), lines)}"
        )

    # -- HTTP ------------------------------------------------------------

    def request(
        self, method: str, path: str, signed: bool = False, auth: Any = None, host: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request to the daemon; ``signed`` adds the client1 OAuth signature."""
        if signed and auth is None:
            auth = oauth()
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        kwargs.setdefault("verify", self.verify)
        return requests.request(method, self.url(path, host), auth=auth, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, signed: bool = True, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, signed=signed, **kwargs)

    def put(self, path: str, signed: bool = True, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, signed=signed, **kwargs)

    def delete(self, path: str, signed: bool = True, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, signed=signed, **kwargs)

    def get_json(self, path: str, **kwargs: Any) -> Any:
        answer = self.get(path, **kwargs)
        assert answer.status_code == 200, f"GET {path} -> {answer.status_code}: {answer.text}"
        return answer.json()

    def poll(
        self, path: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30.0, interval: float = 0.05
    ) -> dict[str, Any]:
        """GET ``path`` until ``until(document)``; fail with the last document after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        document: Any = None
        while True:
            document = self.get_json(path)
            if until(document):
                return document
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{path} did not reach the expected state within {timeout} s; "
                    f"last: {document}\n{self.diagnostics(30)}"
                )
            time.sleep(interval)

    def wait_final(self, path: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll a builder/target/provider image URL until its status is COMPLETED or FAILED."""
        return self.poll(path, lambda doc: doc.get("status") in ("COMPLETED", "FAILED"), timeout)


class DaemonPool:
    """Makes daemons in numbered sub-directories and stops them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.daemons: list[Daemon] = []

    def make(
        self, config: dict[str, Any] | None = None, *, start: bool = True, name: str | None = None, **kwargs: Any
    ) -> Daemon:
        workdir = self.root / (name or f"daemon{len(self.daemons)}")
        daemon = Daemon(workdir, config, **kwargs)
        self.daemons.append(daemon)
        if start:
            daemon.start_ready()
        return daemon

    def __call__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> Daemon:
        return self.make(config, **kwargs)

    def stop_all(self) -> None:
        """Stop every daemon (SIGTERM); print each log tail so a failing test shows it."""
        problems = []
        for daemon in self.daemons:
            try:
                daemon.stop()
            except DaemonError as error:
                problems.append(str(error))
            print(f"\n=== daemon in {daemon.workdir} (port {daemon.port}) ===\n{daemon.diagnostics(40)}")
        if problems:
            raise DaemonError("\n".join(problems))


def mock_config(**extra: Any) -> dict[str, Any]:
    """The standard test config (two OAuth clients, fast mock target) plus ``extra``."""
    config: dict[str, Any] = {"clients": dict(CLIENTS), "mock_duration": 0.5}
    config.update(extra)
    return config
