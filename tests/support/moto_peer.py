"""moto's server mode as the tests' AWS peer: ``moto_server`` on a free loopback port, and EC2 credentials for it.

The ``moto`` fixture (tests/conftest.py) starts one per test module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from .daemon import free_port

#: A mock-OS template with an aarch64 disk of 1 GiB: what the daemon tests build and push to moto.
EC2_TEMPLATE = (
    "<template><name>ec2push</name><os><name>Mock</name><version>1</version><arch>aarch64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>pushed to moto</description></template>"
)
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
SECRET = "moto-SECRET-9c1e7f3a5b2d-DistinctiveValue"
ACCESS_KEY = "AKIAIMGFACTORYTEST01"
ACCOUNT = "123456789012"


def credentials(secret: str = SECRET, access_key: str = ACCESS_KEY, account: str | None = ACCOUNT) -> str:
    account_xml = f"<account_number>{account}</account_number>" if account else ""
    return (
        f"<provider_credentials><ec2_credentials>{account_xml}<access_key>{access_key}</access_key>"
        f"<secret_access_key>{secret}</secret_access_key>"
        "<certificate>ignored</certificate><key>ignored</key></ec2_credentials></provider_credentials>"
    )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited with {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"moto_server did not listen on {port} within {timeout} s")


class MotoServer:
    """``moto_server`` on a free loopback port, in a process group of its own."""

    def __init__(self, workdir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        wait_for_port(self.port, self.process)

    def clients(self) -> tuple[Any, Any]:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        return session.client("ec2", endpoint_url=self.url), session.client("ebs", endpoint_url=self.url)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def s3_client(server: MotoServer) -> Any:
    """An S3 client of ``server`` (path-style addressing, as the image store uses with an endpoint)."""
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=server.url, config=BotoConfig(s3={"addressing_style": "path"}))
