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

This module holds the commands and ``main``; the command line they are
parsed from is in ``client/arguments.py``.
"""

from __future__ import annotations

import argparse
import codecs
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from rich.console import Console

from .client.arguments import build_parser, parse_args
from .client.display import (
    Watched,
    builder_table,
    builders_table,
    make_console,
    plain,
    print_json,
    report_final,
    target_or_provider,
    wait_for,
)
from .client.http import Client, builder_path, object_path
from .client.settings import (
    DEFAULT_URL,
    ENV_DEBUG,
    EXIT_CLIENT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    FINAL_STATUSES,
    POLL_INTERVAL,
    PREFIX,
    CLIError,
    Settings,
    load_config,
    normalize_url,
    resolve_settings,
)

#: The CLI's public names, some defined in ``client/``: tests and scripts use them from here.
__all__ = [
    "COMMANDS",
    "DEFAULT_URL",
    "ENV_DEBUG",
    "CLIError",
    "Client",
    "Context",
    "Settings",
    "Watched",
    "build_parser",
    "builders_table",
    "cmd_log",
    "load_config",
    "main",
    "normalize_url",
    "parse_args",
    "read_template",
    "report_final",
    "resolve_settings",
    "targets_argument",
    "wait_for",
]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


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
    if value != "-" and not os.path.exists(value) and (_UUID.match(value) or value.startswith(("http://", "https://"))):
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
    items = [
        Watched("target image", str(target.get("id")), object_path(str(target.get("href"))))
        for target in build.get("target_images") or []
    ]
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
    data = {
        "image_id": str(target.get("image_id")),
        "build_id": str(target.get("build_id")),
        "target_image_id": str(target.get("id")),
        "provider": args.provider,
        "credentials": credentials,
    }
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
    except Exception as error:
        if os.environ.get(ENV_DEBUG):
            raise
        plain(err, f"error: unexpected {type(error).__name__}: {error}")
        plain(err, f"hint: set {ENV_DEBUG}=1 to see the traceback")
        return EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
