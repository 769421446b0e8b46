"""Integration tests of ``twistd imagefactory``'s command line and JSON config file.

Each test runs the real ``twistd -n --pidfile= imagefactory ...`` and checks its
exit status and what it printed (or logged), within bounded timeouts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from support.daemon import TWISTD, DaemonPool, free_port, mock_config, oauth

RUN_TIMEOUT = 30.0
DEFAULT_CONFIG = "/etc/imagefactory/imagefactory.conf"

F14 = (
    "<template><name>f14jeos</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
    "</template>"
)


def run_twistd(
    tmp_path: Path, *args: str, config: Any = None, config_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n --pidfile= imagefactory --rest --address 127.0.0.1 --state_dir <tmp> [--config f] args``
    to completion (it is expected to refuse to start); stdout and stderr are merged."""
    command = [
        str(TWISTD),
        "-n",
        "--pidfile=",
        "--logfile",
        str(tmp_path / "twistd.log"),
        "imagefactory",
        "--rest",
        "--address",
        "127.0.0.1",
        "--state_dir",
        str(tmp_path / "state"),
    ]
    if config is not None or config_text is not None:
        path = tmp_path / "imagefactory.conf"
        path.write_text(config_text if config_text is not None else json.dumps(config), encoding="utf-8")
        command += ["--config", str(path)]
    command += list(args)
    try:
        return subprocess.run(
            command,
            cwd=str(tmp_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(
            f"twistd did not exit within {RUN_TIMEOUT} s (it should refuse to start): {expired.output!r}"
        ) from None


def said(result: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    """What the process printed plus its log file, if any."""
    log = tmp_path / "twistd.log"
    return result.stdout + (log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")


def test_config_file_mistakes_are_reported_together(tmp_path: Path) -> None:
    """An unknown key and wrongly typed values in the config file ("port": "abc", "rest": "yes",
    "max_concurrent_builds": 0) make twistd exit non-zero with ONE error naming all of them, and
    the error never shows a client secret."""
    result = run_twistd(
        tmp_path,
        config={
            "clients": {"client1": "TOPSECRET-123"},
            "no_such_option": 1,
            "port": "abc",
            "rest": "yes",
            "max_concurrent_builds": 0,
        },
    )
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    for name in ("no_such_option", "port", "rest", "max_concurrent_builds"):
        assert f"'{name}'" in output, f"{name} not reported:\n{output}"
    assert output.count("invalid configuration") == 1, output
    assert "Traceback" not in output, output
    assert "TOPSECRET-123" not in output


def test_command_line_mistakes_are_reported_together(tmp_path: Path) -> None:
    """Bad values on the command line and in the file are all reported in one error."""
    result = run_twistd(
        tmp_path, "--port", "notanumber", "--max_concurrent_pushes", "0", config={"template_fetch_timeout": "soon"}
    )
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    for name in ("port", "max_concurrent_pushes", "template_fetch_timeout"):
        assert f"'{name}'" in output, f"{name} not reported:\n{output}"
    assert output.count("invalid configuration") == 1, output


def test_port_not_a_number_is_an_error(tmp_path: Path) -> None:
    """``--port notanumber`` makes twistd exit non-zero with a message about the port."""
    result = run_twistd(tmp_path, "--port", "notanumber", config=mock_config())
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    assert "port" in output and "integer" in output, output
    assert not (tmp_path / "state" / "imagefactory.sqlite").exists()


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_port_out_of_range_is_an_error(tmp_path: Path, port: str) -> None:
    """A port outside 0..65535 is refused at start."""
    result = run_twistd(tmp_path, "--port", port, config=mock_config())
    assert result.returncode != 0, result.stdout
    assert "'port'" in said(result, tmp_path)


def test_named_config_file_missing_is_an_error(tmp_path: Path) -> None:
    """``--config /nonexistent/...`` makes twistd exit non-zero with a message naming the path."""
    missing = "/nonexistent/imagefactory-test.conf"
    result = run_twistd(tmp_path, "--config", missing, "--port", str(free_port()))
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    assert missing in output, output


@pytest.mark.parametrize(
    "text, needle",
    [("{not json", "JSON"), ('["a", "list"]', "object"), ("", "JSON")],
    ids=["broken", "not-an-object", "empty"],
)
def test_invalid_json_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    """A config file that is not a JSON object makes twistd exit non-zero naming the file and the problem."""
    result = run_twistd(tmp_path, "--port", str(free_port()), config_text=text)
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    assert str(tmp_path / "imagefactory.conf") in output, output
    assert needle in output, output
    assert "Traceback" not in output, output


def test_missing_default_config_file_is_fine(daemon_factory: DaemonPool) -> None:
    """Without --config, a missing default config file (/etc/imagefactory/imagefactory.conf) is not
    an error: the daemon starts and serves (with OAuth on and no clients, writes are refused)."""
    if os.path.exists(DEFAULT_CONFIG):
        pytest.skip(f"{DEFAULT_CONFIG} exists on this machine")
    daemon = daemon_factory(use_config=False, write_config=False)
    assert "--config" not in daemon.command()
    assert daemon.get_json("/imagefactory") == {"version": "1.0", "name": "imagefactory"}
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14})
    assert answer.status_code == 401, answer.text


def test_command_line_wins_over_config_file(daemon_factory: DaemonPool) -> None:
    """Options given on the command line override the config file: the daemon listens on the
    --port given (not the file's port) and uses --mock_duration over the file's."""
    file_port = free_port()
    daemon = daemon_factory(mock_config(port=file_port, mock_duration=60), extra_args=["--mock_duration", "0.1"])
    assert daemon.port != file_port
    assert daemon.get_json("/imagefactory") == {"version": "1.0", "name": "imagefactory"}
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"https://127.0.0.1:{file_port}/imagefactory", verify=daemon.verify, timeout=5)
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14})
    assert answer.status_code == 202, answer.text
    final = daemon.wait_final(answer.json()["build"]["target_images"][0]["href"], timeout=20)
    assert final["status"] == "COMPLETED"


def test_client_secrets_never_logged(daemon_factory: DaemonPool) -> None:
    """The daemon logs its configuration at start, but a client's shared secret never appears in
    its log or output, whether requests are signed with it or with a wrong one."""
    secret = "TOPSECRET-123"
    daemon = daemon_factory({"clients": {"client1": secret}, "mock_duration": 0.1})
    good = daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14}, auth=oauth(secret=secret))
    assert good.status_code == 202, good.text
    bad = daemon.post(
        "/imagefactory/images", data={"targets": "mock", "template": F14}, auth=oauth(secret=secret + "-wrong")
    )
    assert bad.status_code == 401
    assert secret not in bad.text
    daemon.wait_final(good.json()["build"]["target_images"][0]["href"])
    daemon.stop()
    log = daemon.log_text()
    assert "imagefactory configured" in log and "client" in log, log  # the config was logged...
    assert secret not in log  # ...without the secret
    assert secret not in daemon.output_text()
    assert secret.encode() not in daemon.sqlite_path.read_bytes()


def test_state_dir_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    """A state directory that cannot be created makes twistd exit non-zero naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad_state = blocker / "state"
    result = run_twistd(tmp_path, "--port", str(free_port()), "--state_dir", str(bad_state), config=mock_config())
    output = said(result, tmp_path)
    assert result.returncode != 0, output
    assert str(bad_state) in output, output


def test_help_lists_options(tmp_path: Path) -> None:
    """``twistd imagefactory --help`` lists the options (each settable in the file too) and exits 0."""
    result = subprocess.run(
        [str(TWISTD), "imagefactory", "--help"],
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout
    for option in ("--rest", "--port", "--no_ssl", "--ssl_pem", "--no_oauth", "--config", "--state_dir"):
        assert option in result.stdout, result.stdout
