"""Tests of ``imagefactory-cli`` (imgfac_twisted/cli.py).

The integration tests run the CLI as a subprocess (``python -m
imgfac_twisted.cli``, from a neutral working directory so the installed
package is what runs) against the real ``twistd imagefactory`` over TLS,
with the OAuth key and secret in the environment only. Every run is checked
for a Python traceback and for the secret in its output.

The unit tests (argument parsing, settings, waiting, error mapping) need no
daemon.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon import CLIENT_KEY, CLIENT_SECRET, Daemon, DaemonPool, mock_config

from imgfac_twisted import cli

CLI = [sys.executable, "-m", "imgfac_twisted.cli"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "imagefactory-cli"
RUN_TIMEOUT = 60.0

F14 = ("<template><name>f14jeos</name><os><name>Fedora</name> <version>14</version> <arch>x86_64</arch> "
       "<install type='url'> <url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
       "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
       "</template>")
FAIL_TEMPLATE = F14.replace("<name>f14jeos</name>", "<name>FAIL</name>")
FAIL_REASON = "fails templates named FAIL"
PUSH_PASSWORD = "pw-never-shown-4711"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: Secrets that must never show in anything the CLI prints.
SECRETS = (CLIENT_SECRET, PUSH_PASSWORD, "a-wrong-secret-123")
ANSI = re.compile(r"\x1b\[")


def mock_credentials(username: str = "u") -> str:
    return (f"<provider_credentials><mock_credentials><username>{username}</username>"
            f"<password>{PUSH_PASSWORD}</password></mock_credentials></provider_credentials>")


# -- running the CLI -------------------------------------------------------------


def cli_env(home: Path, key: str | None = CLIENT_KEY, secret: str | None = CLIENT_SECRET,
            **extra: str) -> dict[str, str]:
    """The environment of a CLI run: no inherited IMAGEFACTORY_* or terminal forcing, an empty HOME."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("IMAGEFACTORY_")
           and name not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)  # so no real ~/.config/imagefactory/cli.json is read
    if key is not None:
        env["IMAGEFACTORY_KEY"] = key
    if secret is not None:
        env["IMAGEFACTORY_SECRET"] = secret
    env.update(extra)
    return env


def check_clean(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """No traceback, no secret, no terminal escapes (stdout is a pipe) in what the CLI printed."""
    both = result.stdout + result.stderr
    assert "Traceback" not in both, both
    for secret in SECRETS:
        assert secret not in both, f"secret {secret!r} printed:\n{both}"
    assert not ANSI.search(both), repr(both)
    return result


def run(args: list[str], env: dict[str, str], cwd: Path, input: str | None = None,
        timeout: float = RUN_TIMEOUT, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end (bounded) and check its output is clean."""
    for secret in SECRETS:
        assert all(secret not in arg for arg in args), "a test passed a secret as an argument"
    result = subprocess.run([*(command or CLI), *args], env=env, cwd=str(cwd), input=input, text=True,
                            capture_output=True, timeout=timeout)
    return check_clean(result)


class Runner:
    """Runs the CLI against one daemon: --url and --ca-file set, key and secret in the environment."""

    def __init__(self, daemon: Daemon, home: Path) -> None:
        self.daemon = daemon
        self.home = home
        home.mkdir(parents=True, exist_ok=True)

    def connection(self) -> list[str]:
        return ["--url", self.daemon.base_url, "--ca-file", str(self.daemon.pem_path)]

    def __call__(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
                 connection: list[str] | None = None, timeout: float = RUN_TIMEOUT,
                 command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        return run([*(self.connection() if connection is None else connection), *args],
                   env if env is not None else cli_env(self.home), self.home, input, timeout, command)

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)
        assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result

    def file(self, name: str, text: str) -> str:
        path = self.home / name
        path.write_text(text, encoding="utf-8")
        return str(path)


def build_ids(stdout: str) -> dict[str, Any]:
    """The ids ``build`` prints: image, build and target images (with their target)."""
    image = re.search(rf"^image ({UUID})$", stdout, re.M)
    build = re.search(rf"^build ({UUID})$", stdout, re.M)
    targets = re.findall(rf"^target image ({UUID}) \(([^)]*)\)$", stdout, re.M)
    assert image and build and targets, stdout
    return {"image": image.group(1), "build": build.group(1), "targets": targets,
            "target": targets[0][0]}


@pytest.fixture(scope="module")
def runner(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """A CLI runner for the module's shared daemon (mock builds take 0.5 s)."""
    return Runner(daemon, tmp_path_factory.mktemp("cli-home"))


@pytest.fixture(scope="module")
def built(runner: Runner) -> dict[str, Any]:
    """A target image built through the CLI with --wait (COMPLETED), and the CLI's output."""
    template = runner.file("f14.tdl", F14)
    result = runner.ok("build", template, "--targets", "mock", "--wait")
    return {**build_ids(result.stdout), "stdout": result.stdout}


def wait_builder(daemon: Daemon, builder_id: str) -> dict[str, Any]:
    return daemon.wait_final(f"/imagefactory/builders/{builder_id}")


# -- build -------------------------------------------------------------------------


@pytest.mark.integration
def test_build_wait_completes(runner: Runner, built: dict[str, Any]) -> None:
    """build --wait exits 0, prints the image/build/target image ids and a COMPLETED line per status
    change (plain lines, stdout being a pipe); the daemon agrees the target image is COMPLETED."""
    stdout = built["stdout"]
    assert built["targets"] == [(built["target"], "mock")]
    changes = re.findall(rf"^target image {built['target']} \(mock\): (\w+) (\d+)%", stdout, re.M)
    assert changes and changes[-1] == ("COMPLETED", "100"), stdout
    statuses = [status for status, _ in changes]
    assert len(statuses) == len(set(statuses)), f"a status printed twice (a line per poll?):\n{stdout}"
    assert re.search(rf"^target image {built['target']} \(mock\) COMPLETED$", stdout, re.M), stdout
    document = runner.daemon.get_json(f"/imagefactory/builders/{built['target']}")
    assert document["status"] == "COMPLETED"
    assert (document["image_id"], document["build_id"]) == (built["image"], built["build"])


@pytest.mark.integration
def test_build_wait_fail_template_exits_1_with_reason(runner: Runner) -> None:
    """A template named FAIL: build --wait exits 1 and prints the status_detail of the failed target image."""
    result = runner("build", runner.file("fail.tdl", FAIL_TEMPLATE), "--targets", "mock", "--wait")
    assert result.returncode == 1, result
    target = build_ids(result.stdout)["target"]
    assert re.search(rf"^target image {target} \(mock\) FAILED: .*{FAIL_REASON}", result.stdout, re.M), result.stdout
    assert wait_builder(runner.daemon, target)["status"] == "FAILED"


@pytest.mark.integration
def test_build_from_stdin_json_matches_api(runner: Runner) -> None:
    """`--json build -` reads the template from stdin and prints the API's 202 document, which
    names an image, build and target image that the API then serves."""
    result = runner.ok("--json", "build", "-", "--targets", "mock", input=F14)
    answer = json.loads(result.stdout)
    assert answer["_type"] == "image" and answer["build"]["_type"] == "build"
    (target,) = answer["build"]["target_images"]
    assert target["_type"] == "target_image"
    assert answer["href"].endswith(f"/imagefactory/images/{answer['id']}")
    document = runner.daemon.get_json(target["href"])
    assert (document["image_id"], document["build_id"], document["id"]) == (
        answer["id"], answer["build"]["id"], target["id"])
    wait_builder(runner.daemon, target["id"])


@pytest.mark.integration
def test_build_wait_json_prints_final_details(runner: Runner) -> None:
    """--json build --wait prints only JSON on stdout (a list of the final target image details, as
    the API serves them); the progress lines go to stderr."""
    result = runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait", "--json")
    (final,) = json.loads(result.stdout)
    assert final["status"] == "COMPLETED" and final["completed"] == 100
    assert final == runner.daemon.get_json(final["href"])
    assert "COMPLETED" in result.stderr


@pytest.mark.integration
def test_build_unknown_target_is_client_error(runner: Runner) -> None:
    """An unknown target: exit 2 with the API's error message (which lists the known targets)."""
    result = runner("build", runner.file("f14.tdl", F14), "--targets", "no-such-target")
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ") and "no-such-target" in result.stderr and "mock" in result.stderr
    assert result.stdout == ""


@pytest.mark.integration
def test_build_missing_template_file(runner: Runner) -> None:
    """A template file that does not exist: exit 2, a one-line error, nothing sent."""
    result = runner("build", str(runner.home / "missing.tdl"), "--targets", "mock")
    assert result.returncode == 2
    assert "missing.tdl" in result.stderr and "not found" in result.stderr


# -- reads -------------------------------------------------------------------------


@pytest.mark.integration
def test_status_table_and_json(runner: Runner, built: dict[str, Any]) -> None:
    """status shows the builder's fields as a table; with --json it is exactly the API's document."""
    table = runner.ok("status", built["target"]).stdout
    for field, value in (("id", built["target"]), ("operation", "build"), ("status", "COMPLETED"),
                         ("completed", "100%"), ("target", "mock"), ("image_id", built["image"]),
                         ("build_id", built["build"])):
        assert re.search(rf"^\s*{field}\s+{re.escape(value)}\s*$", table, re.M), f"{field}: {table}"
    document = json.loads(runner.ok("status", built["target"], "--json").stdout)
    assert document == runner.daemon.get_json(f"/imagefactory/builders/{built['target']}")


@pytest.mark.integration
def test_status_unknown_id_exit_2(runner: Runner) -> None:
    """status of an unknown id: exit 2 and the API's message."""
    result = runner("status", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 2
    assert "no builder with id" in result.stderr and "(404)" in result.stderr


@pytest.mark.integration
def test_list_shows_builders_newest_first(runner: Runner, built: dict[str, Any]) -> None:
    """list shows every builder (id, operation, target, status, completed, detail), newest first;
    --json is the API's builders document."""
    newer = build_ids(runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait").stdout)
    table = runner.ok("list").stdout
    assert re.search(r"^\s*id\s+operation\s+target/provider\s+status\s+completed\s+detail", table, re.M), table
    row = re.search(rf"^\s*{built['target']}\s+build\s+mock\s+COMPLETED\s+100%", table, re.M)
    assert row, table
    assert table.index(newer["target"]) < table.index(built["target"]), table
    listed = json.loads(runner.ok("--json", "list").stdout)
    assert listed["_type"] == "builders"
    api_ids = [builder["id"] for builder in runner.daemon.get_json("/imagefactory/builders")["builders"]]
    assert [builder["id"] for builder in listed["builders"]] == api_ids
    assert {built["target"], newer["target"]} <= set(api_ids)


@pytest.mark.integration
def test_log_prints_the_builders_log(runner: Runner, built: dict[str, Any]) -> None:
    """log prints the builder's log as the API serves it: time-stamped lines up to BUILDING -> COMPLETED."""
    result = runner.ok("log", built["target"])
    api_text = runner.daemon.get(f"/imagefactory/builders/{built['target']}/log").text
    assert result.stdout == api_text
    lines = result.stdout.splitlines()
    assert len(lines) >= 3 and all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines), result.stdout
    assert lines[-1].endswith("BUILDING -> COMPLETED")


@pytest.mark.integration
def test_log_follow_ends_with_the_builder(runner: Runner) -> None:
    """log -f of a build just started keeps printing until the builder ends, then exits 0 by itself."""
    ids = build_ids(runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock").stdout)
    started = time.monotonic()
    result = runner.ok("log", "-f", ids["target"], timeout=30)
    assert time.monotonic() - started < 30
    assert result.stdout.splitlines()[-1].endswith("BUILDING -> COMPLETED"), result.stdout
    assert runner.daemon.get_json(f"/imagefactory/builders/{ids['target']}")["status"] == "COMPLETED"
    assert result.stdout == runner.daemon.get(f"/imagefactory/builders/{ids['target']}/log").text


# -- push, rebuild ---------------------------------------------------------------


@pytest.mark.integration
def test_push_wait_completes(runner: Runner, built: dict[str, Any]) -> None:
    """push --wait of a COMPLETED target image with mock credentials exits 0; the provider image is
    COMPLETED with an identifier on the provider; the password is never printed."""
    credentials = runner.file("creds.xml", mock_credentials())
    result = runner.ok("push", built["target"], "--provider", "mock", "--credentials", credentials, "--wait")
    match = re.search(rf"^provider image ({UUID}) \(mock\) of target image {built['target']}$", result.stdout, re.M)
    assert match, result.stdout
    push_id = match.group(1)
    assert re.search(rf"^provider image {push_id} \(mock\) COMPLETED, identifier on provider \S+", result.stdout,
                     re.M), result.stdout
    document = runner.daemon.get_json(f"/imagefactory/builders/{push_id}")
    assert document["status"] == "COMPLETED" and document["operation"] == "push"
    assert document["target_image_id"] == built["target"] and document["provider_account_identifier"] == "u"


@pytest.mark.integration
def test_push_wait_failing_exits_1(runner: Runner, built: dict[str, Any]) -> None:
    """push --wait with mock credentials of user FAIL exits 1 and prints why (status_detail)."""
    credentials = runner.file("creds-fail.xml", mock_credentials("FAIL"))
    result = runner("--json", "push", built["target"], "--provider", "mock", "--credentials", credentials, "--wait")
    assert result.returncode == 1, result
    (final,) = json.loads(result.stdout)
    assert final["status"] == "FAILED" and final["status_detail"]
    assert final["status_detail"] in result.stderr


@pytest.mark.integration
def test_push_of_a_push_builder_is_refused(runner: Runner, built: dict[str, Any]) -> None:
    """push needs a target image id: a provider image id is a client error (exit 2), nothing pushed."""
    credentials = runner.file("creds.xml", mock_credentials())
    first = runner.ok("--json", "push", built["target"], "--provider", "mock", "--credentials", credentials)
    push_id = json.loads(first.stdout)["id"]
    wait_builder(runner.daemon, push_id)
    result = runner("push", push_id, "--provider", "mock", "--credentials", credentials)
    assert result.returncode == 2 and "not a target image" in result.stderr


@pytest.mark.integration
def test_rebuild_wait(runner: Runner, built: dict[str, Any]) -> None:
    """rebuild IMAGE_ID --targets mock --wait makes a new build of the same image (its template) and exits 0."""
    result = runner.ok("rebuild", built["image"], "--targets", "mock", "--wait")
    ids = build_ids(result.stdout)
    assert ids["image"] == built["image"] and ids["build"] != built["build"]
    assert runner.daemon.get_json(f"/imagefactory/builders/{ids['target']}")["status"] == "COMPLETED"


# -- cancel ----------------------------------------------------------------------


@pytest.mark.integration
def test_cancel_running_build(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """cancel of a running build (mock builds take 60 s here) answers at once; status then shows
    FAILED "cancelled"; cancelling again is a 409 (exit 2)."""
    slow = daemon_factory(mock_config(mock_duration=60))
    runner = Runner(slow, tmp_path / "home")
    ids = build_ids(runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock").stdout)
    slow.poll(f"/imagefactory/builders/{ids['target']}", lambda doc: doc["status"] == "BUILDING", 10)
    result = runner.ok("cancel", ids["target"])
    assert f"cancelling builder {ids['target']}" in result.stdout
    deadline = time.monotonic() + 15
    while True:
        document = json.loads(runner.ok("--json", "status", ids["target"]).stdout)
        if document["status"] == "FAILED" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert document["status"] == "FAILED", document
    assert "cancel" in document["status_detail"]
    assert re.search(r"^\s*status\s+FAILED\s*$", runner.ok("status", ids["target"]).stdout, re.M)
    again = runner("cancel", ids["target"])
    assert again.returncode == 2 and "(409)" in again.stderr


@pytest.mark.integration
def test_cancel_wait(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """cancel --wait returns once the builder has ended FAILED, exit 0."""
    slow = daemon_factory(mock_config(mock_duration=60))
    runner = Runner(slow, tmp_path / "home")
    ids = build_ids(runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock").stdout)
    result = runner.ok("cancel", "--wait", ids["target"], timeout=30)
    assert re.search(rf"builder {ids['target']} cancelled: .*cancel", result.stdout), result.stdout
    assert slow.get_json(f"/imagefactory/builders/{ids['target']}")["status"] == "FAILED"


# -- OAuth and TLS ----------------------------------------------------------------


@pytest.mark.integration
def test_wrong_secret_is_refused_with_oauth_message(runner: Runner) -> None:
    """A wrong secret: non-zero exit (2), a message about OAuth and a hint, no traceback, no secret shown."""
    env = cli_env(runner.home, secret="a-wrong-secret-123")
    result = runner("build", runner.file("f14.tdl", F14), "--targets", "mock", env=env)
    assert result.returncode == 2, result
    assert "OAuth" in result.stderr and "401" in result.stderr
    assert "hint:" in result.stderr and "IMAGEFACTORY_KEY" not in result.stdout
    assert result.stdout == ""


@pytest.mark.integration
def test_no_key_write_is_sent_unsigned_and_refused_with_hint(runner: Runner) -> None:
    """Without key and secret a write is still sent (unsigned); the OAuth daemon refuses it and the
    CLI says how to configure the key and secret."""
    env = cli_env(runner.home, key=None, secret=None)
    result = runner("build", runner.file("f14.tdl", F14), "--targets", "mock", env=env)
    assert result.returncode == 2, result
    assert "OAuth" in result.stderr
    assert "IMAGEFACTORY_KEY" in result.stderr and "IMAGEFACTORY_SECRET" in result.stderr
    assert "cli.json" in result.stderr
    # Reads need no key.
    runner.ok("list", env=env)


@pytest.mark.integration
def test_no_key_write_accepted_by_no_oauth_daemon(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """Unsigned writes work against a daemon started with --no_oauth."""
    open_daemon = daemon_factory(mock_config(), extra_args=["--no_oauth"])
    runner = Runner(open_daemon, tmp_path / "home")
    env = cli_env(runner.home, key=None, secret=None)
    result = runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait", env=env)
    assert "COMPLETED" in result.stdout


@pytest.mark.integration
def test_insecure_works_without_ca_file(runner: Runner, built: dict[str, Any]) -> None:
    """--insecure talks to the self-signed daemon without --ca-file; without either the CLI fails
    verification (exit 3) and hints at --ca-file and --insecure."""
    url = ["--url", runner.daemon.base_url]
    listed = runner.ok("--insecure", "--json", "list", connection=url)
    assert built["target"] in {builder["id"] for builder in json.loads(listed.stdout)["builders"]}
    assert runner.ok("status", built["target"], "--insecure", connection=url).stdout
    refused = runner("list", connection=url)
    assert refused.returncode == 3, refused
    assert "certificate verify failed" in refused.stderr
    assert "--ca-file" in refused.stderr and "--insecure" in refused.stderr


@pytest.mark.integration
def test_settings_from_environment(runner: Runner, built: dict[str, Any]) -> None:
    """IMAGEFACTORY_URL and IMAGEFACTORY_CA_FILE replace --url and --ca-file."""
    env = cli_env(runner.home, IMAGEFACTORY_URL=runner.daemon.base_url,
                  IMAGEFACTORY_CA_FILE=str(runner.daemon.pem_path))
    assert built["target"] in runner.ok("list", env=env, connection=[]).stdout


@pytest.mark.integration
def test_settings_from_config_file(runner: Runner, tmp_path: Path) -> None:
    """The config file gives url, key, secret and ca_file (a relative ca_file is relative to the file);
    a secret in a file others can read gets a warning, one in a private file none."""
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "daemon.pem").write_bytes(runner.daemon.pem_path.read_bytes())
    config = config_dir / "cli.json"
    config.write_text(json.dumps({"_comment": "test", "url": runner.daemon.base_url, "key": CLIENT_KEY,
                                  "secret": CLIENT_SECRET, "ca_file": "daemon.pem"}), encoding="utf-8")
    config.chmod(0o600)
    env = cli_env(runner.home, key=None, secret=None)
    result = runner.ok("--config", str(config), "build", runner.file("f14.tdl", F14), "--targets", "mock",
                       "--wait", env=env, connection=[])
    assert "COMPLETED" in result.stdout and "warning" not in result.stderr
    config.chmod(0o644)
    result = runner.ok("list", "--config", str(config), env=env, connection=[])
    assert "warning:" in result.stderr and "chmod 600" in result.stderr


@pytest.mark.integration
def test_default_config_file_location(runner: Runner) -> None:
    """Without --config the CLI reads ~/.config/imagefactory/cli.json (HOME being the test's directory)."""
    home = runner.home / "other-home"
    config = home / ".config" / "imagefactory" / "cli.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"url": runner.daemon.base_url, "ca_file": str(runner.daemon.pem_path)}))
    env = cli_env(home)
    result = run(["--json", "list"], env, home)
    assert result.returncode == 0, result
    assert json.loads(result.stdout)["_type"] == "builders"


@pytest.mark.integration
def test_secret_only_in_environment_never_in_arguments(runner: Runner) -> None:
    """While the CLI runs, its process arguments (/proc/<pid>/cmdline) do not hold the secret, its
    environment does; its output never shows it."""
    proc_dir = Path("/proc/self")
    if not (proc_dir / "cmdline").exists():
        pytest.skip("no /proc on this system")
    args = [*CLI, *runner.connection(), "build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait"]
    process = subprocess.Popen(args, env=cli_env(runner.home), cwd=str(runner.home), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Right after exec the kernel may show an empty command line for a moment.
        deadline = time.monotonic() + 5
        cmdline = b""
        while not cmdline and time.monotonic() < deadline:
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            time.sleep(0.01)
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert b"imgfac_twisted.cli" in cmdline
    assert CLIENT_SECRET.encode() not in cmdline
    assert f"IMAGEFACTORY_SECRET={CLIENT_SECRET}".encode() in environ.split(b"\0")
    assert process.returncode == 0, stderr
    check_clean(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))


@pytest.mark.integration
def test_console_script(runner: Runner) -> None:
    """The installed `imagefactory-cli` console script runs the same CLI."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (console_scripts entry missing)")
    result = runner.ok("--json", "list", command=[str(CONSOLE_SCRIPT)])
    assert json.loads(result.stdout)["_type"] == "builders"
    version = run(["--version"], cli_env(runner.home), runner.home, command=[str(CONSOLE_SCRIPT)])
    assert version.returncode == 0 and "imagefactory-cli" in version.stdout


# -- without a daemon: subprocess behaviour ------------------------------------------


def test_unreachable_daemon_exit_3(tmp_path: Path) -> None:
    """Nothing listening: exit 3, one error line with a hint, no traceback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(["--url", f"https://127.0.0.1:{port}", "list"], cli_env(tmp_path), tmp_path)
    assert result.returncode == 3
    assert result.stderr.startswith("error: cannot connect to") and "hint:" in result.stderr


def test_ctrl_c_exits_130_quietly(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while the CLI waits for the daemon: exit 130, no traceback, nothing on stderr."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(RUN_TIMEOUT)
        port = server.getsockname()[1]
        process = subprocess.Popen([*CLI, "--url", f"http://127.0.0.1:{port}", "list"], env=cli_env(tmp_path),
                                   cwd=str(tmp_path), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            connection, _ = server.accept()  # the CLI is now waiting for an answer that never comes
            with connection:
                time.sleep(0.2)
                process.send_signal(signal.SIGINT)
                stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130
    assert stderr == "" and stdout == ""


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Bad usage (no command, missing --targets, a --secret option) is exit 2 with argparse's usage."""
    env = cli_env(tmp_path)
    for args in ([], ["build", "x.tdl"], ["--secret", "s", "list"], ["list", "--key", "k"]):
        result = run(args, env, tmp_path)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr


# -- unit tests: arguments -------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return cli.parse_args(list(argv))


def test_parse_global_options_before_or_after_the_command() -> None:
    """Global options may come before or after the command; unset ones have their defaults."""
    before = parse("--url", "https://h:1", "--json", "--ca-file", "c.pem", "status", "abc")
    after = parse("status", "abc", "--url", "https://h:1", "--json", "--ca-file", "c.pem")
    for args in (before, after):
        assert (args.command, args.id, args.url, args.json, args.ca_file, args.insecure, args.config) == (
            "status", "abc", "https://h:1", True, "c.pem", False, None)
    plain_args = parse("list")
    assert (plain_args.url, plain_args.json, plain_args.ca_file, plain_args.insecure) == (None, False, None, False)


def test_parse_commands() -> None:
    """Each command's arguments land where the command functions read them."""
    build = parse("build", "-", "--targets", "mock,other", "--targets", "third", "--wait")
    assert (build.template, build.targets, build.wait) == ("-", ["mock,other", "third"], True)
    push = parse("push", "t1", "--provider", "mock", "--credentials", "c.xml")
    assert (push.target_image_id, push.provider, push.credentials, push.wait) == ("t1", "mock", "c.xml", False)
    log = parse("log", "b1", "-f")
    assert (log.id, log.follow) == ("b1", True)
    assert parse("log", "b1").follow is False
    rebuild = parse("rebuild", "i1", "--targets", "mock")
    assert (rebuild.image_id, rebuild.template, rebuild.wait) == ("i1", None, False)
    cancel = parse("cancel", "b1", "--wait")
    assert (cancel.id, cancel.wait) == ("b1", True)
    assert set(cli.COMMANDS) == {"build", "rebuild", "push", "status", "list", "log", "cancel"}


def test_parse_rejects_secrets_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """There is no option for the OAuth key or secret: they would show in the process list."""
    for argv in (["--secret", "x", "list"], ["list", "--secret", "x"], ["--key", "k", "list"],
                 ["--oauth-secret", "x", "list"]):
        assert cli.main(argv) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    options = {option for action in cli.build_parser()._actions for option in action.option_strings}
    assert not {option for option in options if "secret" in option or "key" in option}


def test_parse_insecure_excludes_ca_file(capsys: pytest.CaptureFixture[str]) -> None:
    """--insecure and --ca-file cannot be combined, whichever side of the command they are on."""
    assert cli.main(["--insecure", "--ca-file", "x", "list"]) == 2
    assert cli.main(["--insecure", "list", "--ca-file", "x"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_parse_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--help and --version exit 0 (main returns the code rather than raising SystemExit)."""
    assert cli.main(["--help"]) == 0
    assert "IMAGEFACTORY_SECRET" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"imagefactory-cli {cli.__version__}"


def test_targets_argument() -> None:
    """--targets values are split on commas, trimmed, deduplicated in order; none at all is an error."""
    assert cli.targets_argument(["mock, other,mock", "third"]) == "mock,other,third"
    with pytest.raises(cli.CLIError):
        cli.targets_argument([" , "])


def test_read_template(tmp_path: Path) -> None:
    """A template argument is a file's content; a UUID or URL that is no file goes to the daemon as is."""
    path = tmp_path / "t.tdl"
    path.write_text(F14)
    assert cli.read_template(str(path)) == F14
    image_id = "0e5b4e6b-c658-4a16-bc71-88293cb1cadf"
    assert cli.read_template(image_id) == image_id
    assert cli.read_template("https://example.org/t.xml") == "https://example.org/t.xml"
    with pytest.raises(cli.CLIError, match="not found"):
        cli.read_template(str(tmp_path / "nope.tdl"))
    (tmp_path / "empty.tdl").write_text("  \n")
    with pytest.raises(cli.CLIError, match="empty"):
        cli.read_template(str(tmp_path / "empty.tdl"))


# -- unit tests: settings ----------------------------------------------------------------


def test_settings_precedence(tmp_path: Path) -> None:
    """Command line beats environment beats config file beats default; key and secret come as a pair."""
    config = tmp_path / "cli.json"
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config.write_text(json.dumps({"url": "https://from-file:1", "key": "fk", "secret": "fs", "ca_file": "ca.pem"}))
    config.chmod(0o600)
    env = {"HOME": str(tmp_path)}
    from_file = cli.resolve_settings(parse("--config", str(config), "list"), env)
    assert (from_file.url, from_file.key, from_file.secret, from_file.verify) == (
        "https://from-file:1", "fk", "fs", str(ca))
    env.update(IMAGEFACTORY_URL="https://from-env:2/imagefactory/", IMAGEFACTORY_KEY="ek",
               IMAGEFACTORY_SECRET="es", IMAGEFACTORY_CA_FILE=str(ca))
    from_env = cli.resolve_settings(parse("--config", str(config), "list"), env)
    assert (from_env.url, from_env.key, from_env.secret) == ("https://from-env:2", "ek", "es")
    from_args = cli.resolve_settings(parse("--config", str(config), "--url", "http://from-args:3", "--insecure",
                                           "list"), env)
    assert (from_args.url, from_args.verify) == ("http://from-args:3", False)
    defaults = cli.resolve_settings(parse("list"), {"HOME": str(tmp_path / "nobody")})
    assert (defaults.url, defaults.verify, defaults.key, defaults.secret, defaults.json) == (
        cli.DEFAULT_URL, True, None, None, False)
    assert defaults.config_path == str(tmp_path / "nobody" / ".config" / "imagefactory" / "cli.json")
    assert defaults.oauth() is None


def test_settings_never_show_the_secret(tmp_path: Path) -> None:
    """The settings' repr (e.g. in a debugger or a log) leaves the secret out."""
    settings = cli.Settings(key="k", secret="very-secret-value")
    assert "very-secret-value" not in repr(settings)
    assert settings.oauth() is not None
    with pytest.raises(cli.CLIError, match="secret is missing"):
        cli.Settings(key="k").oauth()


def test_config_file_errors(tmp_path: Path) -> None:
    """A named config file must exist and hold known string keys; invalid JSON is reported without its content."""
    with pytest.raises(cli.CLIError, match="does not exist"):
        cli.load_config(str(tmp_path / "missing.json"), explicit=True)
    assert cli.load_config(str(tmp_path / "missing.json"), explicit=False) == {}
    bad = tmp_path / "bad.json"
    bad.write_text('{"secret": "do-not-echo-me", ')
    with pytest.raises(cli.CLIError) as error:
        cli.load_config(str(bad), explicit=True)
    assert "not valid JSON" in error.value.message and "do-not-echo-me" not in error.value.message
    bad.write_text(json.dumps({"url": 5, "colour": "red", "_note": "comments are fine"}))
    with pytest.raises(cli.CLIError) as error:
        cli.load_config(str(bad), explicit=True)
    assert "colour" in error.value.message and "url must be a string" in error.value.message
    with pytest.raises(cli.CLIError, match="not found"):
        cli.resolve_settings(parse("--ca-file", str(tmp_path / "nope.pem"), "list"), {"HOME": str(tmp_path)})


def test_config_file_readable_by_others_warns(tmp_path: Path) -> None:
    """A secret in a file that group or others can read gets a warning naming the fix."""
    config = tmp_path / "cli.json"
    config.write_text(json.dumps({"key": "k", "secret": "s"}))
    warnings: list[str] = []
    config.chmod(0o640)
    cli.load_config(str(config), True, warnings.append)
    assert len(warnings) == 1 and "chmod 600" in warnings[0]
    config.chmod(stat.S_IRUSR | stat.S_IWUSR)
    cli.load_config(str(config), True, warnings.append)
    assert len(warnings) == 1


def test_normalize_url() -> None:
    """The base URL loses a trailing / or /imagefactory; other schemes are refused."""
    assert cli.normalize_url("https://h:8075/") == "https://h:8075"
    assert cli.normalize_url("https://h:8075/imagefactory") == "https://h:8075"
    for bad in ("ftp://h", "localhost:8075", "https://"):
        with pytest.raises(cli.CLIError):
            cli.normalize_url(bad)


# -- unit tests: waiting and output ---------------------------------------------------------


def pipe_console() -> tuple[Any, io.StringIO]:
    stream = io.StringIO()
    console = cli.Console(file=stream, highlight=False, soft_wrap=True, width=200)
    assert not console.is_terminal
    return console, stream


def test_wait_without_terminal_prints_one_line_per_status_change() -> None:
    """Off a terminal, --wait prints a line when a status changes, not on every poll, and stops when
    every item is final; the summary's exit code is 1 if any FAILED."""
    answers = {
        "/a": iter([("PENDING", 0), ("BUILDING", 10), ("BUILDING", 50), ("BUILDING", 90), ("COMPLETED", 100)]),
        "/b": iter([("BUILDING", 0), ("BUILDING", 20), ("FAILED", 40)]),
    }
    polls: list[str] = []

    def fetch(path: str) -> dict[str, Any]:
        polls.append(path)
        status, completed = next(answers[path])
        return {"status": status, "completed": completed,
                "status_detail": "it broke" if status == "FAILED" else None}

    items = [cli.Watched("target image", "a" * 8, "/a", "mock"), cli.Watched("target image", "b" * 8, "/b", "other")]
    console, stream = pipe_console()
    cli.wait_for(items, fetch, console, sleep=lambda seconds: None)
    assert stream.getvalue().splitlines() == [
        "target image aaaaaaaa (mock): PENDING 0%",
        "target image bbbbbbbb (other): BUILDING 0%",
        "target image aaaaaaaa (mock): BUILDING 10%",
        "target image bbbbbbbb (other): FAILED 40% - it broke",
        "target image aaaaaaaa (mock): COMPLETED 100%",
    ]
    assert polls.count("/b") == 3 and polls.count("/a") == 5  # a final item is not polled again
    assert cli.report_final(items, console) == 1
    assert "target image bbbbbbbb (other) FAILED: it broke" in stream.getvalue()
    assert cli.report_final(items[:1], console) == 0


def test_output_does_not_interpret_server_text_as_markup() -> None:
    """Text from the daemon (e.g. a status_detail with [brackets]) is printed as is."""
    console, stream = pipe_console()
    item = cli.Watched("target image", "x", "/x", "[bold]mock[/bold]",
                       {"status": "FAILED", "completed": 3, "status_detail": "bad [red]thing[/red]"})
    cli.report_final([item], console)
    console.print(cli.builders_table([{"id": "x", "operation": "build", "target": "[i]t[/i]", "status": "FAILED",
                                       "completed": 3, "status_detail": "[b]why[/b]"}]))
    out = stream.getvalue()
    assert "(" + "[bold]mock[/bold]" + ") FAILED: bad [red]thing[/red]" in out
    assert "[i]t[/i]" in out and "[b]why[/b]" in out


# -- unit tests: errors ---------------------------------------------------------------------


class FakeSession:
    """Answers every request with one canned response."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.headers: dict[str, str] = {}
        self.status, self.body, self.content_type = status, body, content_type
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, auth: Any = None, **kwargs: Any) -> requests.Response:
        self.calls.append((method, url, auth))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = self.content_type
        response.reason = "Reason"
        return response

    def close(self) -> None:
        pass


def error_of(status: int, body: bytes, signed: bool = False, settings: cli.Settings | None = None) -> cli.CLIError:
    client = cli.Client(settings or cli.Settings(), FakeSession(status, body))  # type: ignore[arg-type]
    with pytest.raises(cli.CLIError) as caught:
        client.request("POST" if signed else "GET", "/imagefactory/x", signed=signed)
    return caught.value


def test_api_errors_map_to_exit_codes() -> None:
    """4xx is exit 2 and 5xx exit 3, with the API's message; a non-JSON error body is still reported."""
    def body(code: int, message: str) -> bytes:
        return json.dumps({"_type": "error", "code": code, "message": message}).encode()

    not_found = error_of(404, body(404, "no builder with id 'x'"))
    assert (not_found.code, not_found.message) == (2, "no builder with id 'x' (404)")
    internal = error_of(500, body(500, "internal error (request id r1)"))
    assert internal.code == 3 and "request id r1" in internal.message
    proxy = error_of(502, b"<html>bad gateway</html>")
    assert proxy.code == 3 and "not an Image Factory error document" in proxy.message
    conflict = error_of(409, body(409, "builder b is FAILED"))
    assert conflict.code == 2


def test_401_hints_depend_on_configured_credentials() -> None:
    """A 401 mentions OAuth; the hint says how to configure a key if none is, else to check it."""
    body = json.dumps({"message": "missing OAuth signature"}).encode()
    unsigned = error_of(401, body, signed=True)
    assert unsigned.code == 2 and "OAuth" in unsigned.message
    assert "IMAGEFACTORY_KEY" in (unsigned.hint or "") and "never taken from the command line" in (unsigned.hint or "")
    signed = error_of(401, body, signed=True, settings=cli.Settings(key="k", secret="s",
                                                                   credentials_source="from the environment"))
    assert "check the OAuth key and secret" in (signed.hint or "")


def test_writes_are_signed_only_when_a_key_is_configured() -> None:
    """Writes carry an OAuth1 signer when key and secret are set, none otherwise; reads never do."""
    session = FakeSession(202, b"{}")
    cli.Client(cli.Settings(key="k", secret="s"), session).write("POST", "/p", {"a": "b"})  # type: ignore[arg-type]
    cli.Client(cli.Settings(), session).write("POST", "/p", {"a": "b"})  # type: ignore[arg-type]
    cli.Client(cli.Settings(key="k", secret="s"), session).get("/p")  # type: ignore[arg-type]
    assert [type(auth).__name__ for _, _, auth in session.calls] == ["OAuth1", "NoneType", "NoneType"]


def test_main_turns_ctrl_c_and_surprises_into_exit_codes(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """KeyboardInterrupt is exit 130 with nothing printed; an unexpected exception is exit 3 with one
    error line, not a traceback."""
    monkeypatch.delenv(cli.ENV_DEBUG, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")

    def interrupted(ctx: Any, args: Any) -> int:
        raise KeyboardInterrupt

    def broken(ctx: Any, args: Any) -> int:
        raise RuntimeError("surprise")

    monkeypatch.setitem(cli.COMMANDS, "list", interrupted)
    assert cli.main(["list"]) == 130
    assert capsys.readouterr() == ("", "")
    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert cli.main(["list"]) == 3
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: surprise" in err and "Traceback" not in err


class FakeLogClient:
    """Serves a builder log in canned chunks: (bytes, X-Builder-Status) per call."""

    def __init__(self, answers: list[tuple[bytes, str]]) -> None:
        self.answers = answers
        self.offsets: list[int] = []

    def log(self, builder_id: str, offset: int) -> tuple[bytes, str]:
        self.offsets.append(offset)
        return self.answers.pop(0)


def run_log(answers: list[tuple[bytes, str]], follow: bool, monkeypatch: pytest.MonkeyPatch) -> FakeLogClient:
    client = FakeLogClient(answers)
    sleeps: list[float] = []
    monkeypatch.setattr(cli.time, "sleep", sleeps.append)
    console, _ = pipe_console()
    ctx = cli.Context(cli.Settings(), client, console, console)  # type: ignore[arg-type]
    assert cli.cmd_log(ctx, argparse.Namespace(id="b1", follow=follow)) == 0
    assert not client.answers, "the log was not read to its end"
    return client


def test_log_pages_with_offsets_and_keeps_split_characters(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """log reads on from the byte offset until an empty answer; a UTF-8 character split between two
    answers is printed whole."""
    client = run_log([(b"caf\xc3", "BUILDING"), (b"\xa9 ok\n", "BUILDING"), (b"", "BUILDING")], False, monkeypatch)
    assert client.offsets == [0, 4, 9]
    assert capsys.readouterr().out == "caf\u00e9 ok\n"


def test_log_follow_stops_on_final_status_with_no_more_data(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """log -f polls while the builder runs and stops at the first empty answer with a final status
    (the daemon reads the status before the log, so nothing is lost)."""
    answers = [(b"one\n", "BUILDING"), (b"", "BUILDING"), (b"", "BUILDING"), (b"two\n", "COMPLETED"),
               (b"", "COMPLETED")]
    client = run_log(answers, True, monkeypatch)
    assert client.offsets == [0, 4, 4, 4, 8]
    assert capsys.readouterr().out == "one\ntwo\n"
