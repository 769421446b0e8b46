"""What the provider push tests share: provider files, pushes, Conductor calls, the CLI, the secret check.

Used by test_ec2_moto.py, test_openstack_glance.py and test_vsphere_vcsim.py: each defines its own
provider, credentials and checks of what landed; how a push is asked for, how a Conductor call is
made, how the CLI is run and where a secret must not show are the same for all three.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import requests
from lxml import etree

from support.daemon import CLIENT_KEY, CLIENT_SECRET, Daemon, DaemonPool, mock_config

CLI = Path(sys.executable).parent / "imagefactory-cli"
CONDUCTOR_USER, CONDUCTOR_PASSWORD = "admin", "conductor pass"
XML = {"Accept": "application/xml", "Content-Type": "application/xml"}
#: State files larger than this are image files (a GiB, sparse): they cannot hold a secret.
SMALL_FILE = 64 * 1024 * 1024


def conductor_users() -> dict[str, str]:
    """The ``conductor_users`` option: CONDUCTOR_USER with CONDUCTOR_PASSWORD, bcrypt-hashed as PHP does."""
    hashed = bcrypt.hashpw(CONDUCTOR_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    return {CONDUCTOR_USER: hashed.replace("$2b$", "$2y$", 1)}


def write_providers(folder: Path, kind: str, definitions: dict[str, dict[str, Any]]) -> Path:
    """One provider file of type ``kind`` per entry of ``definitions`` (name: settings) in ``folder``."""
    folder.mkdir(exist_ok=True)
    for name, settings in definitions.items():
        (folder / f"{name}.json").write_text(json.dumps({"name": name, "type": kind, **settings}))
    return folder


def push(daemon: Daemon, target: dict[str, Any], provider: str, creds: str) -> dict[str, Any]:
    """Ask for a push of ``target`` to ``provider``; its 202 answer's document."""
    answer = daemon.post(target["href"] + "/provider_images", data={"provider": provider, "credentials": creds})
    assert answer.status_code == 202, answer.text
    document: dict[str, Any] = answer.json()
    return document


def builder_log(daemon: Daemon, builder_id: str) -> str:
    answer = daemon.get(f"/imagefactory/builders/{builder_id}/log")
    assert answer.status_code == 200
    return answer.text


def conductor_call(daemon: Daemon, method: str, path: str, body: str | None = None) -> etree._Element:
    """A Conductor API call as CONDUCTOR_USER; its XML answer (200 or 201)."""
    answer = daemon.request(
        method, "/conductor/api" + path, auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD), headers=XML, data=body, timeout=60
    )
    assert answer.status_code in (200, 201), answer.text
    return etree.fromstring(answer.content)


def cli_push(
    daemon: Daemon, tmp_path: Path, provider: str, credentials: Path, target_id: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``imagefactory-cli push --wait --json`` of ``target_id`` to ``provider``, with a clean environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("IMAGEFACTORY_")}
    env.update(HOME=str(tmp_path), IMAGEFACTORY_KEY=CLIENT_KEY, IMAGEFACTORY_SECRET=CLIENT_SECRET)
    connection = ["--url", daemon.base_url, "--ca-file", str(daemon.pem_path)]
    return subprocess.run(
        [str(CLI), "push", *connection, "--provider", provider, "--credentials", str(credentials)]
        + ["--wait", "--json", target_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def everything_said(daemon: Daemon, conductor: bool = True) -> str:
    """The daemon's log and output, its state files (but image files) and its answers listing builders."""
    said = daemon.log_text() + daemon.output_text()
    assert said, "the daemon logged something"
    for path in daemon.state_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < SMALL_FILE:
            said += path.read_bytes().decode("utf-8", "replace")
    said += daemon.get("/imagefactory/builders").text
    if conductor:
        said += requests.get(
            daemon.url("/conductor/api/provider_images"),
            auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD),
            headers=XML,
            verify=daemon.verify,
            timeout=30,
        ).text
    return said


def refused_at_start(daemon_factory: DaemonPool, folder: Path) -> str:
    """Start a daemon whose ``provider_dir`` is ``folder``: it must exit non-zero; what it said."""
    daemon = daemon_factory(mock_config(provider_dir=str(folder)), start=False)
    daemon.start()
    assert daemon.process is not None
    daemon.process.wait(timeout=60)
    assert daemon.process.returncode != 0
    return daemon.output_text() + daemon.log_text()
