"""Unit tests of ``imagefactory-cli`` (imgfac_twisted/cli.py): argument parsing, settings, waiting and
output, error mapping, log paging; no daemon, no subprocess (those: tests/integration/test_cli_daemon.py)."""

from __future__ import annotations

import argparse
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import requests

from imgfac_twisted import __version__, cli

F14 = (
    "<template><name>f14jeos</name><os><name>Fedora</name> <version>14</version> <arch>x86_64</arch> "
    "<install type='url'> <url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
    "</template>"
)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


# -- unit tests: arguments -------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return cli.parse_args(list(argv))


def test_parse_global_options_before_or_after_the_command() -> None:
    """Global options may come before or after the command; unset ones have their defaults."""
    before = parse("--url", "https://h:1", "--json", "--ca-file", "c.pem", "status", "abc")
    after = parse("status", "abc", "--url", "https://h:1", "--json", "--ca-file", "c.pem")
    for args in (before, after):
        assert (args.command, args.id, args.url, args.json, args.ca_file, args.insecure, args.config) == (
            "status",
            "abc",
            "https://h:1",
            True,
            "c.pem",
            False,
            None,
        )
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
    for argv in (
        ["--secret", "x", "list"],
        ["list", "--secret", "x"],
        ["--key", "k", "list"],
        ["--oauth-secret", "x", "list"],
    ):
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
    assert capsys.readouterr().out.strip() == f"imagefactory-cli {__version__}"


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
        "https://from-file:1",
        "fk",
        "fs",
        str(ca),
    )
    env.update(
        IMAGEFACTORY_URL="https://from-env:2/imagefactory/",
        IMAGEFACTORY_KEY="ek",
        IMAGEFACTORY_SECRET="es",
        IMAGEFACTORY_CA_FILE=str(ca),
    )
    from_env = cli.resolve_settings(parse("--config", str(config), "list"), env)
    assert (from_env.url, from_env.key, from_env.secret) == ("https://from-env:2", "ek", "es")
    from_args = cli.resolve_settings(
        parse("--config", str(config), "--url", "http://from-args:3", "--insecure", "list"), env
    )
    assert (from_args.url, from_args.verify) == ("http://from-args:3", False)
    defaults = cli.resolve_settings(parse("list"), {"HOME": str(tmp_path / "nobody")})
    assert (defaults.url, defaults.verify, defaults.key, defaults.secret, defaults.json) == (
        cli.DEFAULT_URL,
        True,
        None,
        None,
        False,
    )
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
        return {"status": status, "completed": completed, "status_detail": "it broke" if status == "FAILED" else None}

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
    item = cli.Watched(
        "target image",
        "x",
        "/x",
        "[bold]mock[/bold]",
        {"status": "FAILED", "completed": 3, "status_detail": "bad [red]thing[/red]"},
    )
    cli.report_final([item], console)
    console.print(
        cli.builders_table(
            [
                {
                    "id": "x",
                    "operation": "build",
                    "target": "[i]t[/i]",
                    "status": "FAILED",
                    "completed": 3,
                    "status_detail": "[b]why[/b]",
                }
            ]
        )
    )
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
    signed = error_of(
        401, body, signed=True, settings=cli.Settings(key="k", secret="s", credentials_source="from the environment")
    )
    assert "check the OAuth key and secret" in (signed.hint or "")


def test_writes_are_signed_only_when_a_key_is_configured() -> None:
    """Writes carry an OAuth1 signer when key and secret are set, none otherwise; reads never do."""
    session = FakeSession(202, b"{}")
    cli.Client(cli.Settings(key="k", secret="s"), session).write("POST", "/p", {"a": "b"})  # type: ignore[arg-type]
    cli.Client(cli.Settings(), session).write("POST", "/p", {"a": "b"})  # type: ignore[arg-type]
    cli.Client(cli.Settings(key="k", secret="s"), session).get("/p")  # type: ignore[arg-type]
    assert [type(auth).__name__ for _, _, auth in session.calls] == ["OAuth1", "NoneType", "NoneType"]


def test_main_turns_ctrl_c_and_surprises_into_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
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


def test_log_pages_with_offsets_and_keeps_split_characters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """log reads on from the byte offset until an empty answer; a UTF-8 character split between two
    answers is printed whole."""
    client = run_log([(b"caf\xc3", "BUILDING"), (b"\xa9 ok\n", "BUILDING"), (b"", "BUILDING")], False, monkeypatch)
    assert client.offsets == [0, 4, 9]
    assert capsys.readouterr().out == "caf\u00e9 ok\n"


def test_log_follow_stops_on_final_status_with_no_more_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """log -f polls while the builder runs and stops at the first empty answer with a final status
    (the daemon reads the status before the log, so nothing is lost)."""
    answers = [
        (b"one\n", "BUILDING"),
        (b"", "BUILDING"),
        (b"", "BUILDING"),
        (b"two\n", "COMPLETED"),
        (b"", "COMPLETED"),
    ]
    client = run_log(answers, True, monkeypatch)
    assert client.offsets == [0, 4, 4, 4, 8]
    assert capsys.readouterr().out == "one\ntwo\n"
