"""``imagefactory-cli``: a command-line client of the Image Factory REST API.

Synchronous (requests); writes are signed with two-legged OAuth 1.0a
(requests-oauthlib); output is made with rich: tables and progress bars on a
terminal, plain lines (one per status change) when stdout is a pipe or a
file, the API's own JSON with ``--json``.

The OAuth key and secret are read from the environment
(``IMAGEFACTORY_KEY``, ``IMAGEFACTORY_SECRET``) or the config file, never
from the command line, where other users of the machine could see them.

Exit codes: 0 success; 1 a waited-for build or push ended FAILED; 2 a
client error (bad usage, bad file, the API answered 4xx); 3 a server or
connection error (5xx, unreachable, TLS); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import quote, urlsplit

import requests
from requests_oauthlib import OAuth1
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .jsonfile import read_json_object

PROG = "imagefactory-cli"
DEFAULT_URL = "https://localhost:8075"
PREFIX = "/imagefactory"
FINAL_STATUSES = ("COMPLETED", "FAILED")
#: Seconds between two polls of a running builder (``--wait``, ``log -f``).
POLL_INTERVAL = 0.5
#: (connect, read) timeouts of one HTTP request, in seconds.
HTTP_TIMEOUT = (10.0, 60.0)
#: Width of tables when stdout is not a terminal (and COLUMNS is not set):
#: wide enough that ids are never folded.
PIPE_WIDTH = 200

ENV_URL = "IMAGEFACTORY_URL"
ENV_CA_FILE = "IMAGEFACTORY_CA_FILE"
ENV_KEY = "IMAGEFACTORY_KEY"
ENV_SECRET = "IMAGEFACTORY_SECRET"
ENV_DEBUG = "IMAGEFACTORY_CLI_DEBUG"
CONFIG_KEYS = ("url", "key", "secret", "ca_file")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CLIENT = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130

TLS_HINT = (
    "the daemon's certificate is self-signed by default: pass --ca-file <state_dir>/tls/imagefactory.pem "
    f"(or set {ENV_CA_FILE}, or \"ca_file\" in the config file), or --insecure to skip verification"
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class CLIError(Exception):
    """An error reported as ``error: message`` (plus an optional hint) with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_CLIENT, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


# -- settings ------------------------------------------------------------------


@dataclass
class Settings:
    """Where the daemon is, how to verify it and how to sign writes."""

    url: str = DEFAULT_URL
    verify: bool | str = True
    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    json: bool = False
    config_path: str = ""
    credentials_source: str = ""

    def oauth(self) -> OAuth1 | None:
        """The signer for writes, or None when no key/secret is configured (unsigned writes)."""
        if not self.key and not self.secret:
            return None
        if not self.key or not self.secret:
            missing = "secret" if self.key else "key"
            raise CLIError(f"an OAuth key and secret are both needed, the {missing} is missing "
                           f"({self.credentials_source})", hint=self.credentials_hint())
        return OAuth1(self.key, self.secret, signature_method="HMAC-SHA1")

    def credentials_hint(self) -> str:
        return (f"set {ENV_KEY} and {ENV_SECRET} in the environment, or put "
                f"{{\"key\": ..., \"secret\": ...}} in {self.config_path} (chmod 600); "
                "the key and secret are never taken from the command line")


def default_config_path(env: Mapping[str, str]) -> str:
    """``$XDG_CONFIG_HOME/imagefactory/cli.json``, by default ``~/.config/imagefactory/cli.json``."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, "imagefactory", "cli.json")


def load_config(path: str, explicit: bool, warn: Callable[[str], None] = lambda message: None) -> dict[str, str]:
    """The config file's settings; a missing default file is empty, a missing named one an error."""
    document = read_json_object(path, must_exist=explicit, error=CLIError)
    if not document:
        return {}
    settings = {name: value for name, value in document.items() if not name.startswith("_")}
    unknown = sorted(name for name in settings if name not in CONFIG_KEYS)
    wrong = sorted(name for name, value in settings.items() if name in CONFIG_KEYS and not isinstance(value, str))
    problems = []
    if unknown:
        problems.append(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"(known: {', '.join(CONFIG_KEYS)})")
    if wrong:
        problems.append(f"{', '.join(wrong)} must be {'strings' if len(wrong) > 1 else 'a string'}")
    if problems:
        raise CLIError(f"config file {path}: {'; '.join(problems)}")
    if settings.get("secret") and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} holds an OAuth secret and other users can read it: chmod 600 {path}")
    return settings


def normalize_url(url: str) -> str:
    """``scheme://host[:port]`` (a trailing ``/`` or ``/imagefactory`` is dropped)."""
    url = url.strip().rstrip("/")
    if url.endswith(PREFIX):
        url = url[: -len(PREFIX)]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CLIError(f"bad daemon URL {url!r}: expected http(s)://host[:port]")
    return url.rstrip("/")


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str],
                     warn: Callable[[str], None] = lambda message: None) -> Settings:
    """Merge the command line, the environment and the config file (in that order of precedence)."""
    explicit = args.config is not None
    config_path = os.path.expanduser(args.config) if explicit else default_config_path(env)
    config = load_config(config_path, explicit, warn)

    url = normalize_url(args.url or env.get(ENV_URL) or config.get("url") or DEFAULT_URL)

    verify: bool | str = True
    if args.insecure:
        verify = False
    else:
        ca_file = args.ca_file or env.get(ENV_CA_FILE) or config.get("ca_file")
        if ca_file:
            if not args.ca_file and not env.get(ENV_CA_FILE):
                # Relative to the config file that names it.
                ca_file = os.path.join(os.path.dirname(config_path), os.path.expanduser(ca_file))
            ca_file = os.path.expanduser(ca_file)
            if not os.path.isfile(ca_file):
                raise CLIError(f"CA file {ca_file} not found", hint=TLS_HINT)
            verify = ca_file

    # The key and secret come as a pair, from the environment or from the file.
    if env.get(ENV_KEY) or env.get(ENV_SECRET):
        key, secret, source = env.get(ENV_KEY) or None, env.get(ENV_SECRET) or None, "from the environment"
    else:
        key, secret, source = config.get("key") or None, config.get("secret") or None, f"from {config_path}"

    return Settings(url=url, verify=verify, key=key, secret=secret, json=bool(args.json),
                    config_path=config_path, credentials_source=source)


# -- HTTP ------------------------------------------------------------------------


def _short_reason(error: BaseException) -> str:
    """The useful end of a requests/urllib3 exception's message."""
    text = str(error)
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if reason is not None:
        text = str(reason)
    for pattern in (r"certificate verify failed: [^(]*", r"\[Errno -?\d+\] [^')\"]*",
                    r"[Hh]ostname mismatch[^')\"]*", r"wrong version number", r"record layer failure"):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()
    text = re.sub(r"<[^>]* object at 0x[0-9a-f]+>: ", "", text)
    return text


def object_path(href: str) -> str:
    """The path of an href the API answered (the CLI keeps talking to its own --url)."""
    return urlsplit(href).path


def builder_path(builder_id: str) -> str:
    return f"{PREFIX}/builders/{quote(builder_id, safe='')}"


class Client:
    """The factory's REST API over one requests session."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"{PROG}/{__version__}"
        self.session.headers["Accept"] = "application/json"

    def url(self, path: str) -> str:
        return self.settings.url + path

    def request(self, method: str, path: str, *, signed: bool = False, **kwargs: Any) -> requests.Response:
        """Send one request; raise CLIError for a connection problem or an error answer."""
        auth = self.settings.oauth() if signed else None
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's verify.
        kwargs.setdefault("verify", self.settings.verify)
        try:
            response = self.session.request(method, self.url(path), auth=auth, **kwargs)
        except requests.exceptions.SSLError as error:
            reason = _short_reason(error)
            hint = TLS_HINT
            if "wrong version number" in reason or "record layer" in reason:
                hint = f"does the daemon run without TLS (--no_ssl)? then use an http:// URL; else {TLS_HINT}"
            raise CLIError(f"TLS connection to {self.settings.url} failed: {reason}", EXIT_SERVER, hint) from None
        except requests.exceptions.Timeout:
            raise CLIError(f"{self.settings.url} did not answer in time ({method} {path})", EXIT_SERVER) from None
        except requests.exceptions.ConnectionError as error:
            raise CLIError(f"cannot connect to {self.settings.url}: {_short_reason(error)}", EXIT_SERVER,
                           f"is the daemon running? (--url or {ENV_URL} says where)") from None
        except requests.exceptions.RequestException as error:
            raise CLIError(f"request to {self.settings.url} failed: {_short_reason(error)}", EXIT_SERVER) from None
        if response.status_code >= 400:
            raise self._error(method, response, signed, auth is not None)
        if response.status_code >= 300:
            raise CLIError(f"{method} {path} answered {response.status_code} {response.reason}", EXIT_SERVER)
        return response

    def _error(self, method: str, response: requests.Response, signed: bool, had_auth: bool) -> CLIError:
        status = response.status_code
        message = None
        try:
            document = response.json()
            if isinstance(document, dict) and isinstance(document.get("message"), str):
                message = document["message"]
        except ValueError:
            pass
        if not message:
            message = f"{response.reason or 'error'} (the answer is not an Image Factory error document)"
        code = EXIT_CLIENT if status < 500 else EXIT_SERVER
        if status == 401:
            if had_auth:
                hint = ("check the OAuth key and secret (" + self.settings.credentials_source + "): they must match "
                        "an entry of the daemon's \"clients\"; a stale timestamp means a wrong clock")
            else:
                hint = "this write must be signed with OAuth and no key/secret is configured: " + \
                    self.settings.credentials_hint()
            return CLIError(f"OAuth authentication failed (401): {message}", code, hint)
        return CLIError(f"{message} ({status})", code)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise CLIError(f"{method} {path} answered {response.status_code} without JSON: "
                           "is --url an Image Factory?", EXIT_SERVER) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.json("GET", path, **kwargs)

    def write(self, method: str, path: str, data: dict[str, str] | None = None) -> Any:
        """A signed write (unsigned when no key/secret is configured)."""
        return self.json(method, path, signed=True, data=data)

    def log(self, builder_id: str, offset: int) -> tuple[bytes, str]:
        """Log bytes from ``offset`` on and the builder's status (``X-Builder-Status``)."""
        response = self.request("GET", builder_path(builder_id) + "/log", params={"offset": str(offset)},
                                headers={"Accept": "text/plain"})
        return response.content, response.headers.get("X-Builder-Status", "")


# -- output ----------------------------------------------------------------------


def make_console(stderr: bool = False) -> Console:
    """A console that draws on a terminal and writes plain, unwrapped lines elsewhere."""
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
    return console


def plain(console: Console, text: str) -> None:
    """Print server-provided text as is (never as rich markup)."""
    console.print(text, markup=False, emoji=False, highlight=False)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> Text:
    return Text("" if value is None else str(value))


def _status_text(status: str) -> Text:
    style = {"COMPLETED": "green", "FAILED": "bold red", "BUILDING": "cyan", "PUSHING": "cyan",
             "PENDING": "yellow", "NEW": "yellow"}.get(status, "")
    return Text(status or "?", style=style)


def target_or_provider(builder: Mapping[str, Any]) -> str:
    """What a builder builds for (its target) or pushes to (its provider)."""
    if builder.get("operation") == "push":
        return str(builder.get("provider") or "")
    return str(builder.get("target") or "")


DETAIL_FIELDS = ("id", "operation", "status", "completed", "status_detail", "target", "provider",
                 "image_id", "build_id", "target_image_id", "provider_account_identifier",
                 "identifier_on_provider", "href")


def builder_table(builder: Mapping[str, Any]) -> Table:
    table = Table(show_header=False, box=box.SIMPLE)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name in DETAIL_FIELDS + tuple(sorted(set(builder) - set(DETAIL_FIELDS) - {"_type"})):
        if name not in builder:
            continue
        value = builder[name]
        if name == "status":
            table.add_row(name, _status_text(str(value)))
        elif name == "completed":
            table.add_row(name, _cell(f"{value}%"))
        else:
            table.add_row(name, _cell(value))
    return table


def builders_table(builders: Iterable[Mapping[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("operation", no_wrap=True)
    table.add_column("target/provider", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("completed", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for builder in builders:
        table.add_row(_cell(builder.get("id")), _cell(builder.get("operation")), _cell(target_or_provider(builder)),
                      _status_text(str(builder.get("status") or "")), _cell(f"{builder.get('completed', 0)}%"),
                      _cell(builder.get("status_detail")))
    return table


# -- waiting -----------------------------------------------------------------------


@dataclass
class Watched:
    """One target or provider image being waited for."""

    kind: str  # "target image" or "provider image"
    id: str
    path: str  # its details' URL path
    label: str = ""
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.document.get("status") or "")

    @property
    def completed(self) -> int:
        try:
            return int(self.document.get("completed") or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def status_line(item: Watched) -> str:
    """The line printed for a status change when stdout is not a terminal."""
    line = f"{item.kind} {item.id} ({item.label}): {item.status} {item.completed}%"
    if item.status == "FAILED" and item.document.get("status_detail"):
        line += f" - {item.document['status_detail']}"
    return line


def wait_for(items: Sequence[Watched], fetch: Callable[[str], dict[str, Any]], console: Console,
             interval: float = POLL_INTERVAL, sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll every item's details until each is COMPLETED or FAILED.

    On a terminal: one progress bar per item. Elsewhere: one line per status change.
    """
    if console.is_terminal:
        _wait_with_bars(items, fetch, console, interval, sleep)
    else:
        _wait_with_lines(items, fetch, console, interval, sleep)


def _poll_round(items: Sequence[Watched], fetch: Callable[[str], dict[str, Any]]) -> list[Watched]:
    """Refresh the items not yet final; return those that changed status."""
    changed = []
    for item in items:
        if item.final:
            continue
        before = item.status
        item.document = fetch(item.path)
        if item.status != before:
            changed.append(item)
    return changed


def _wait_with_lines(items: Sequence[Watched], fetch: Callable[[str], dict[str, Any]], console: Console,
                     interval: float, sleep: Callable[[float], None]) -> None:
    while True:
        for item in _poll_round(items, fetch):
            plain(console, status_line(item))
        if all(item.final for item in items):
            return
        sleep(interval)


def _bar_status(item: Watched) -> str:
    style = {"COMPLETED": "green", "FAILED": "bold red"}.get(item.status, "cyan")
    return f"[{style}]{escape(item.status or '...')}[/]"


def _wait_with_bars(items: Sequence[Watched], fetch: Callable[[str], dict[str, Any]], console: Console,
                    interval: float, sleep: Callable[[float], None]) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        tasks = {id(item): progress.add_task(escape(f"{item.kind} {item.id[:8]} {item.label}"), total=100,
                                             status=_bar_status(item)) for item in items}
        while True:
            _poll_round(items, fetch)
            for item in items:
                progress.update(tasks[id(item)], completed=item.completed, status=_bar_status(item))
            if all(item.final for item in items):
                return
            sleep(interval)


def report_final(items: Sequence[Watched], console: Console) -> int:
    """Say how the items ended; 0 if all COMPLETED, 1 if any FAILED."""
    failed = [item for item in items if item.status != "COMPLETED"]
    for item in items:
        if item.status == "COMPLETED":
            extra = ""
            if item.document.get("identifier_on_provider"):
                extra = f", identifier on provider {item.document['identifier_on_provider']}"
            plain(console, f"{item.kind} {item.id} ({item.label}) COMPLETED{extra}")
        else:
            detail = item.document.get("status_detail") or "no reason given"
            plain(console, f"{item.kind} {item.id} ({item.label}) {item.status}: {detail}")
    return EXIT_FAILED if failed else EXIT_OK


# -- commands ----------------------------------------------------------------------


class Context:
    """What a command works with."""

    def __init__(self, settings: Settings, client: Client, out: Console, err: Console) -> None:
        self.settings = settings
        self.client = client
        self.out = out
        self.err = err

    @property
    def progress_console(self) -> Console:
        """Progress goes to stderr when stdout carries JSON."""
        return self.err if self.settings.json else self.out

    def wait(self, items: Sequence[Watched]) -> int:
        console = self.progress_console
        wait_for(items, self.client.get, console)
        code = report_final(items, console)
        if self.settings.json:
            print_json([item.document for item in items])
        return code


def read_text_argument(value: str, what: str) -> str:
    """The content of file ``value`` (``-`` for stdin)."""
    if value == "-":
        return sys.stdin.read()
    try:
        with open(value, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        raise CLIError(f"{what} file {value} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CLIError(f"cannot read {what} file {value}: {getattr(error, 'strerror', None) or error}") from None


def read_template(value: str) -> str:
    """A template argument: a file, ``-`` (stdin), or an image UUID or http(s) URL passed to the daemon as is."""
    if value != "-" and not os.path.exists(value) and (
            _UUID.match(value) or value.startswith(("http://", "https://"))):
        return value
    text = read_text_argument(value, "template")
    if not text.strip():
        raise CLIError(f"template {'from stdin' if value == '-' else value} is empty")
    return text


def targets_argument(values: Sequence[str]) -> str:
    """``--targets a,b --targets c`` as the API's comma-separated ``a,b,c``."""
    names = [name.strip() for value in values for name in value.split(",")]
    names = [name for name in names if name]
    if not names:
        raise CLIError("--targets needs at least one target name (e.g. --targets mock)")
    return ",".join(dict.fromkeys(names))


def _started_build(ctx: Context, answer: dict[str, Any], wait: bool) -> int:
    """Show (and maybe wait for) the target images of a build answer."""
    build = answer.get("build") or {}
    items = [Watched("target image", str(target.get("id")), object_path(str(target.get("href"))))
             for target in build.get("target_images") or []]
    # The answer does not say which target each is: ask (its details are what --wait polls anyway).
    for item in items if wait or not ctx.settings.json else ():
        try:
            item.document = ctx.client.get(item.path)
            item.label = target_or_provider(item.document)
        except CLIError:
            item.label = "?"
    if not ctx.settings.json:
        plain(ctx.out, f"image {answer.get('id')}")
        plain(ctx.out, f"build {build.get('id')}")
        for item in items:
            plain(ctx.out, f"target image {item.id} ({item.label})")
    elif not wait:
        print_json(answer)
    if not wait:
        return EXIT_OK
    for item in items:
        item.document = {}  # report the first status seen while waiting as a change
    return ctx.wait(items)


def cmd_build(ctx: Context, args: argparse.Namespace) -> int:
    data = {"targets": targets_argument(args.targets), "template": read_template(args.template)}
    answer = ctx.client.write("POST", f"{PREFIX}/images", data)
    return _started_build(ctx, answer, args.wait)


def cmd_rebuild(ctx: Context, args: argparse.Namespace) -> int:
    data = {"targets": targets_argument(args.targets)}
    if args.template is not None:
        data["template"] = read_template(args.template)
    answer = ctx.client.write("PUT", f"{PREFIX}/images/{quote(args.image_id, safe='')}", data)
    return _started_build(ctx, answer, args.wait)


def cmd_push(ctx: Context, args: argparse.Namespace) -> int:
    credentials = read_text_argument(args.credentials, "credentials")
    if not credentials.strip():
        raise CLIError("the credentials file is empty")
    target = ctx.client.get(builder_path(args.target_image_id))
    if target.get("operation") != "build":
        raise CLIError(f"{args.target_image_id} is a {target.get('operation')} builder, not a target image")
    data = {"image_id": str(target.get("image_id")), "build_id": str(target.get("build_id")),
            "target_image_id": str(target.get("id")), "provider": args.provider, "credentials": credentials}
    answer = ctx.client.write("POST", f"{PREFIX}/provider_images", data)
    item = Watched("provider image", str(answer.get("id")), object_path(str(answer.get("href"))), args.provider)
    if ctx.settings.json:
        if not args.wait:
            print_json(answer)
    else:
        plain(ctx.out, f"provider image {item.id} ({args.provider}) of target image {target.get('id')}")
    if not args.wait:
        return EXIT_OK
    return ctx.wait([item])


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    builder = ctx.client.get(builder_path(args.id))
    if ctx.settings.json:
        print_json(builder)
    else:
        ctx.out.print(builder_table(builder))
    return EXIT_OK


def cmd_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.client.get(f"{PREFIX}/builders")
    if ctx.settings.json:
        print_json(answer)
        return EXIT_OK
    builders = list(reversed(answer.get("builders") or []))  # the API lists the oldest first
    if builders:
        ctx.out.print(builders_table(builders))
    else:
        plain(ctx.out, "no builders")
    return EXIT_OK


def cmd_log(ctx: Context, args: argparse.Namespace) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offset = 0
    while True:
        data, status = ctx.client.log(args.id, offset)
        offset += len(data)
        text = decoder.decode(data)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
        if data:
            continue  # one answer carries at most 1 MiB: page on at once
        # The daemon reads the status before the log: a final status with nothing more means the end.
        if not args.follow or status in FINAL_STATUSES:
            tail = decoder.decode(b"", final=True)
            if tail:
                sys.stdout.write(tail)
                sys.stdout.flush()
            return EXIT_OK
        time.sleep(POLL_INTERVAL)


def cmd_cancel(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.client.write("DELETE", builder_path(args.id))
    if ctx.settings.json and not args.wait:
        print_json(answer)
    elif not ctx.settings.json:
        plain(ctx.out, f"cancelling builder {answer.get('id', args.id)} (status {answer.get('status')})")
    if not args.wait:
        return EXIT_OK
    builder = ctx.client.get(builder_path(args.id))
    item = Watched(_kind(builder), args.id, builder_path(args.id), target_or_provider(builder))
    console = ctx.progress_console
    wait_for([item], ctx.client.get, console)
    if ctx.settings.json:
        print_json(item.document)
    if item.status == "FAILED":
        plain(console, f"builder {args.id} cancelled: {item.document.get('status_detail') or 'FAILED'}")
        return EXIT_OK
    plain(console, f"builder {args.id} ended {item.status} before the cancel took effect")
    return EXIT_FAILED


def _kind(builder: Mapping[str, Any]) -> str:
    return "provider image" if builder.get("operation") == "push" else "target image"


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], int]] = {
    "build": cmd_build,
    "rebuild": cmd_rebuild,
    "push": cmd_push,
    "status": cmd_status,
    "list": cmd_list,
    "log": cmd_log,
    "cancel": cmd_cancel,
}


# -- arguments ---------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after the command name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument("--url", default=default(None), metavar="URL",
                       help=f"the daemon (default: ${ENV_URL}, the config file's \"url\", or {DEFAULT_URL})")
    tls = group.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", default=default(False),
                     help="do not verify the daemon's TLS certificate")
    tls.add_argument("--ca-file", dest="ca_file", default=default(None), metavar="PATH",
                     help=f"verify the daemon against this certificate, e.g. <state_dir>/tls/imagefactory.pem "
                          f"(default: ${ENV_CA_FILE} or the config file's \"ca_file\")")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the API's JSON instead of tables")
    group.add_argument("--config", default=default(None), metavar="PATH",
                       help="JSON file with url, key, secret, ca_file (default: ~/.config/imagefactory/cli.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of the Image Factory REST API.",
        epilog=(f"OAuth key and secret (for writes): ${ENV_KEY} and ${ENV_SECRET}, or \"key\" and \"secret\" in "
                "the config file; never on the command line. Exit codes: 0 ok, 1 a waited-for build or push "
                "FAILED, 2 client error (usage, file, 4xx), 3 server or connection error, 130 interrupted."),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        return sub

    wait_help = ("show progress until every image is COMPLETED or FAILED; exit 1 if any FAILED "
                 "(with --json, print their final details as a JSON list)")

    build = command("build", "build a new image for one or more targets (POST /imagefactory/images)")
    build.add_argument("template", metavar="TEMPLATE_FILE",
                       help="TDL template file, - for stdin (an image UUID or http(s) URL is passed on as is)")
    build.add_argument("--targets", action="append", required=True, metavar="NAME[,NAME...]",
                       help="target names, comma-separated (e.g. mock)")
    build.add_argument("--wait", action="store_true", help=wait_help)

    rebuild = command("rebuild", "build an existing image again (PUT /imagefactory/images/<id>)")
    rebuild.add_argument("image_id", metavar="IMAGE_ID")
    rebuild.add_argument("--targets", action="append", required=True, metavar="NAME[,NAME...]",
                         help="target names, comma-separated (e.g. mock)")
    rebuild.add_argument("--template", metavar="TEMPLATE_FILE",
                         help="a new template (file or -); by default the image's template is rebuilt")
    rebuild.add_argument("--wait", action="store_true", help=wait_help)

    push = command("push", "push a COMPLETED target image to a provider (POST /imagefactory/provider_images)")
    push.add_argument("target_image_id", metavar="TARGET_IMAGE_ID")
    push.add_argument("--provider", required=True, metavar="NAME", help="provider name (e.g. mock)")
    push.add_argument("--credentials", required=True, metavar="FILE",
                      help="file with the provider credentials XML (- for stdin); sent, never printed")
    push.add_argument("--wait", action="store_true", help=wait_help)

    status = command("status", "show a builder's details")
    status.add_argument("id", metavar="ID", help="builder (target or provider image) id")

    command("list", "list all builders, newest first")

    log = command("log", "print a builder's log")
    log.add_argument("id", metavar="ID", help="builder (target or provider image) id")
    log.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the builder ends")

    cancel = command("cancel", "cancel a running or waiting builder (DELETE /imagefactory/builders/<id>)")
    cancel.add_argument("id", metavar="ID", help="builder (target or provider image) id")
    cancel.add_argument("--wait", action="store_true", help="wait until the builder has ended")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, value in (("url", None), ("insecure", False), ("ca_file", None), ("json", False), ("config", None)):
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.insecure and args.ca_file:
        raise CLIError("--insecure and --ca-file exclude each other")
    return args


# -- main ----------------------------------------------------------------------------


def _report(console: Console, error: CLIError) -> None:
    plain(console, f"error: {error.message}")
    if error.hint:
        plain(console, f"hint: {error.hint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``imagefactory-cli`` with ``argv`` (default: the process's arguments); return the exit code."""
    err = make_console(stderr=True)
    try:
        try:
            args = parse_args(argv)
        except SystemExit as exit_:  # --help, --version, usage errors (argparse printed them)
            return exit_.code if isinstance(exit_.code, int) else EXIT_CLIENT
        settings = resolve_settings(args, os.environ, warn=lambda message: plain(err, f"warning: {message}"))
        if settings.verify is False:
            import urllib3
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        client = Client(settings)
        context = Context(settings, client, make_console(), err)
        try:
            return COMMANDS[args.command](context, args)
        finally:
            client.session.close()
    except CLIError as error:
        _report(err, error)
        return error.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without a second error at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - a CLI shows no tracebacks
        if os.environ.get(ENV_DEBUG):
            raise
        plain(err, f"error: unexpected {type(error).__name__}: {error}")
        plain(err, f"hint: set {ENV_DEBUG}=1 to see the traceback")
        return EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
