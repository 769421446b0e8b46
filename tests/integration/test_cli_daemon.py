"""Tests of ``imagefactory-cli`` (imgfac_twisted/cli.py).

The integration tests run the CLI as a subprocess (``python -m
imgfac_twisted.cli``, from a neutral working directory so the installed
package is what runs) against the real ``twistd imagefactory`` over TLS,
with the OAuth key and secret in the environment only. Every run is checked
for a Python traceback and for the secret in its output.

The unit tests (argument parsing, settings, waiting, error mapping) need no
daemon: tests/unit/test_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.daemon import CLIENT_KEY, CLIENT_SECRET, Daemon, DaemonPool, mock_config

CLI = [sys.executable, "-m", "imgfac_twisted.cli"]
CONSOLE_SCRIPT = Path(sys.executable).parent / "imagefactory-cli"
RUN_TIMEOUT = 60.0

F14 = (
    "<template><name>f14jeos</name><os><name>Fedora</name> <version>14</version> <arch>x86_64</arch> "
    "<install type='url'> <url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
    "</template>"
)
FAIL_TEMPLATE = F14.replace("<name>f14jeos</name>", "<name>FAIL</name>")
FAIL_REASON = "fails templates named FAIL"
PUSH_PASSWORD = "pw-never-shown-4711"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: Secrets that must never show in anything the CLI prints.
SECRETS = (CLIENT_SECRET, PUSH_PASSWORD, "a-wrong-secret-123")
ANSI = re.compile(r"\x1b\[")


def mock_credentials(username: str = "u") -> str:
    return (
        f"<provider_credentials><mock_credentials><username>{username}</username>"
        f"<password>{PUSH_PASSWORD}</password></mock_credentials></provider_credentials>"
    )


# -- running the CLI -------------------------------------------------------------


def cli_env(
    home: Path, key: str | None = CLIENT_KEY, secret: str | None = CLIENT_SECRET, **extra: str
) -> dict[str, str]:
    """The environment of a CLI run: no inherited IMAGEFACTORY_* or terminal forcing, an empty HOME."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IMAGEFACTORY_")
        and name not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "XDG_CONFIG_HOME")
    }
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


def run(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    input: str | None = None,
    timeout: float = RUN_TIMEOUT,
    command: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end (bounded) and check its output is clean."""
    for secret in SECRETS:
        assert all(secret not in arg for arg in args), "a test passed a secret as an argument"
    result = subprocess.run(
        [*(command or CLI), *args], env=env, cwd=str(cwd), input=input, text=True, capture_output=True, timeout=timeout
    )
    return check_clean(result)


class Runner:
    """Runs the CLI against one daemon: --url and --ca-file set, key and secret in the environment."""

    def __init__(self, daemon: Daemon, home: Path) -> None:
        self.daemon = daemon
        self.home = home
        home.mkdir(parents=True, exist_ok=True)

    def connection(self) -> list[str]:
        return ["--url", self.daemon.base_url, "--ca-file", str(self.daemon.pem_path)]

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        connection: list[str] | None = None,
        timeout: float = RUN_TIMEOUT,
        command: list[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [*(self.connection() if connection is None else connection), *args],
            env if env is not None else cli_env(self.home),
            self.home,
            input,
            timeout,
            command,
        )

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
    return {"image": image.group(1), "build": build.group(1), "targets": targets, "target": targets[0][0]}


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


def test_build_wait_fail_template_exits_1_with_reason(runner: Runner) -> None:
    """A template named FAIL: build --wait exits 1 and prints the status_detail of the failed target image."""
    result = runner("build", runner.file("fail.tdl", FAIL_TEMPLATE), "--targets", "mock", "--wait")
    assert result.returncode == 1, result
    target = build_ids(result.stdout)["target"]
    assert re.search(rf"^target image {target} \(mock\) FAILED: .*{FAIL_REASON}", result.stdout, re.M), result.stdout
    assert wait_builder(runner.daemon, target)["status"] == "FAILED"


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
        answer["id"],
        answer["build"]["id"],
        target["id"],
    )
    wait_builder(runner.daemon, target["id"])


def test_build_wait_json_prints_final_details(runner: Runner) -> None:
    """--json build --wait prints only JSON on stdout (a list of the final target image details, as
    the API serves them); the progress lines go to stderr."""
    result = runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait", "--json")
    (final,) = json.loads(result.stdout)
    assert final["status"] == "COMPLETED" and final["completed"] == 100
    assert final == runner.daemon.get_json(final["href"])
    assert "COMPLETED" in result.stderr


def test_build_unknown_target_is_client_error(runner: Runner) -> None:
    """An unknown target: exit 2 with the API's error message (which lists the known targets)."""
    result = runner("build", runner.file("f14.tdl", F14), "--targets", "no-such-target")
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ") and "no-such-target" in result.stderr and "mock" in result.stderr
    assert result.stdout == ""


def test_build_missing_template_file(runner: Runner) -> None:
    """A template file that does not exist: exit 2, a one-line error, nothing sent."""
    result = runner("build", str(runner.home / "missing.tdl"), "--targets", "mock")
    assert result.returncode == 2
    assert "missing.tdl" in result.stderr and "not found" in result.stderr


# -- reads -------------------------------------------------------------------------


def test_status_table_and_json(runner: Runner, built: dict[str, Any]) -> None:
    """status shows the builder's fields as a table; with --json it is exactly the API's document."""
    table = runner.ok("status", built["target"]).stdout
    for field, value in (
        ("id", built["target"]),
        ("operation", "build"),
        ("status", "COMPLETED"),
        ("completed", "100%"),
        ("target", "mock"),
        ("image_id", built["image"]),
        ("build_id", built["build"]),
    ):
        assert re.search(rf"^\s*{field}\s+{re.escape(value)}\s*$", table, re.M), f"{field}: {table}"
    document = json.loads(runner.ok("status", built["target"], "--json").stdout)
    assert document == runner.daemon.get_json(f"/imagefactory/builders/{built['target']}")


def test_status_unknown_id_exit_2(runner: Runner) -> None:
    """status of an unknown id: exit 2 and the API's message."""
    result = runner("status", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 2
    assert "no builder with id" in result.stderr and "(404)" in result.stderr


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


def test_log_prints_the_builders_log(runner: Runner, built: dict[str, Any]) -> None:
    """log prints the builder's log as the API serves it: time-stamped lines up to BUILDING -> COMPLETED."""
    result = runner.ok("log", built["target"])
    api_text = runner.daemon.get(f"/imagefactory/builders/{built['target']}/log").text
    assert result.stdout == api_text
    lines = result.stdout.splitlines()
    assert len(lines) >= 3 and all(re.match(r"\d{4}-\d\d-\d\dT", line) for line in lines), result.stdout
    assert lines[-1].endswith("BUILDING -> COMPLETED")


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


def test_push_wait_completes(runner: Runner, built: dict[str, Any]) -> None:
    """push --wait of a COMPLETED target image with mock credentials exits 0; the provider image is
    COMPLETED with an identifier on the provider; the password is never printed."""
    credentials = runner.file("creds.xml", mock_credentials())
    result = runner.ok("push", built["target"], "--provider", "mock", "--credentials", credentials, "--wait")
    match = re.search(rf"^provider image ({UUID}) \(mock\) of target image {built['target']}$", result.stdout, re.M)
    assert match, result.stdout
    push_id = match.group(1)
    assert re.search(
        rf"^provider image {push_id} \(mock\) COMPLETED, identifier on provider \S+", result.stdout, re.M
    ), result.stdout
    document = runner.daemon.get_json(f"/imagefactory/builders/{push_id}")
    assert document["status"] == "COMPLETED" and document["operation"] == "push"
    assert document["target_image_id"] == built["target"] and document["provider_account_identifier"] == "u"


def test_push_wait_failing_exits_1(runner: Runner, built: dict[str, Any]) -> None:
    """push --wait with mock credentials of user FAIL exits 1 and prints why (status_detail)."""
    credentials = runner.file("creds-fail.xml", mock_credentials("FAIL"))
    result = runner("--json", "push", built["target"], "--provider", "mock", "--credentials", credentials, "--wait")
    assert result.returncode == 1, result
    (final,) = json.loads(result.stdout)
    assert final["status"] == "FAILED" and final["status_detail"]
    assert final["status_detail"] in result.stderr


def test_push_of_a_push_builder_is_refused(runner: Runner, built: dict[str, Any]) -> None:
    """push needs a target image id: a provider image id is a client error (exit 2), nothing pushed."""
    credentials = runner.file("creds.xml", mock_credentials())
    first = runner.ok("--json", "push", built["target"], "--provider", "mock", "--credentials", credentials)
    push_id = json.loads(first.stdout)["id"]
    wait_builder(runner.daemon, push_id)
    result = runner("push", push_id, "--provider", "mock", "--credentials", credentials)
    assert result.returncode == 2 and "not a target image" in result.stderr


def test_rebuild_wait(runner: Runner, built: dict[str, Any]) -> None:
    """rebuild IMAGE_ID --targets mock --wait makes a new build of the same image (its template) and exits 0."""
    result = runner.ok("rebuild", built["image"], "--targets", "mock", "--wait")
    ids = build_ids(result.stdout)
    assert ids["image"] == built["image"] and ids["build"] != built["build"]
    assert runner.daemon.get_json(f"/imagefactory/builders/{ids['target']}")["status"] == "COMPLETED"


# -- cancel ----------------------------------------------------------------------


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


def test_cancel_wait(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """cancel --wait returns once the builder has ended FAILED, exit 0."""
    slow = daemon_factory(mock_config(mock_duration=60))
    runner = Runner(slow, tmp_path / "home")
    ids = build_ids(runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock").stdout)
    result = runner.ok("cancel", "--wait", ids["target"], timeout=30)
    assert re.search(rf"builder {ids['target']} cancelled: .*cancel", result.stdout), result.stdout
    assert slow.get_json(f"/imagefactory/builders/{ids['target']}")["status"] == "FAILED"


# -- OAuth and TLS ----------------------------------------------------------------


def test_wrong_secret_is_refused_with_oauth_message(runner: Runner) -> None:
    """A wrong secret: non-zero exit (2), a message about OAuth and a hint, no traceback, no secret shown."""
    env = cli_env(runner.home, secret="a-wrong-secret-123")
    result = runner("build", runner.file("f14.tdl", F14), "--targets", "mock", env=env)
    assert result.returncode == 2, result
    assert "OAuth" in result.stderr and "401" in result.stderr
    assert "hint:" in result.stderr and "IMAGEFACTORY_KEY" not in result.stdout
    assert result.stdout == ""


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


def test_no_key_write_accepted_by_no_oauth_daemon(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """Unsigned writes work against a daemon started with --no_oauth."""
    open_daemon = daemon_factory(mock_config(), extra_args=["--no_oauth"])
    runner = Runner(open_daemon, tmp_path / "home")
    env = cli_env(runner.home, key=None, secret=None)
    result = runner.ok("build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait", env=env)
    assert "COMPLETED" in result.stdout


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


def test_settings_from_environment(runner: Runner, built: dict[str, Any]) -> None:
    """IMAGEFACTORY_URL and IMAGEFACTORY_CA_FILE replace --url and --ca-file."""
    env = cli_env(
        runner.home, IMAGEFACTORY_URL=runner.daemon.base_url, IMAGEFACTORY_CA_FILE=str(runner.daemon.pem_path)
    )
    assert built["target"] in runner.ok("list", env=env, connection=[]).stdout


def test_settings_from_config_file(runner: Runner, tmp_path: Path) -> None:
    """The config file gives url, key, secret and ca_file (a relative ca_file is relative to the file);
    a secret in a file others can read gets a warning, one in a private file none."""
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "daemon.pem").write_bytes(runner.daemon.pem_path.read_bytes())
    config = config_dir / "cli.json"
    config.write_text(
        json.dumps(
            {
                "_comment": "test",
                "url": runner.daemon.base_url,
                "key": CLIENT_KEY,
                "secret": CLIENT_SECRET,
                "ca_file": "daemon.pem",
            }
        ),
        encoding="utf-8",
    )
    config.chmod(0o600)
    env = cli_env(runner.home, key=None, secret=None)
    result = runner.ok(
        "--config",
        str(config),
        "build",
        runner.file("f14.tdl", F14),
        "--targets",
        "mock",
        "--wait",
        env=env,
        connection=[],
    )
    assert "COMPLETED" in result.stdout and "warning" not in result.stderr
    config.chmod(0o644)
    result = runner.ok("list", "--config", str(config), env=env, connection=[])
    assert "warning:" in result.stderr and "chmod 600" in result.stderr


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


def test_secret_only_in_environment_never_in_arguments(runner: Runner) -> None:
    """While the CLI runs, its process arguments (/proc/<pid>/cmdline) do not hold the secret, its
    environment does; its output never shows it."""
    proc_dir = Path("/proc/self")
    if not (proc_dir / "cmdline").exists():
        pytest.skip("no /proc on this system")
    args = [*CLI, *runner.connection(), "build", runner.file("f14.tdl", F14), "--targets", "mock", "--wait"]
    process = subprocess.Popen(
        args, env=cli_env(runner.home), cwd=str(runner.home), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
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
        process = subprocess.Popen(
            [*CLI, "--url", f"http://127.0.0.1:{port}", "list"],
            env=cli_env(tmp_path),
            cwd=str(tmp_path),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
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
