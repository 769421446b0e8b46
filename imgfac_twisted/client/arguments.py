"""``imagefactory-cli``'s command line: its commands, their arguments and the options every command takes.

The connection and output options (``--url``, ``--insecure``, ``--ca-file``,
``--json``, ``--config``) are accepted before or after the command name.
What each command does is in ``imgfac_twisted.cli``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .. import __version__
from .settings import DEFAULT_URL, ENV_CA_FILE, ENV_KEY, ENV_SECRET, ENV_URL, PROG, CLIError

__all__ = ["build_parser", "parse_args"]


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after the command name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--url",
        default=default(None),
        metavar="URL",
        help=f'the daemon (default: ${ENV_URL}, the config file\'s "url", or {DEFAULT_URL})',
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--insecure", action="store_true", default=default(False), help="do not verify the daemon's TLS certificate"
    )
    tls.add_argument(
        "--ca-file",
        dest="ca_file",
        default=default(None),
        metavar="PATH",
        help=f"verify the daemon against this certificate, e.g. <state_dir>/tls/imagefactory.pem "
        f'(default: ${ENV_CA_FILE} or the config file\'s "ca_file")',
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print the API's JSON instead of tables"
    )
    group.add_argument(
        "--config",
        default=default(None),
        metavar="PATH",
        help="JSON file with url, key, secret, ca_file (default: ~/.config/imagefactory/cli.json)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and option, the connection options taken before or after the command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of the Image Factory REST API.",
        epilog=(
            f'OAuth key and secret (for writes): ${ENV_KEY} and ${ENV_SECRET}, or "key" and "secret" in '
            "the config file; never on the command line. Exit codes: 0 ok, 1 a waited-for build or push "
            "FAILED, 2 client error (usage, file, 4xx), 3 server or connection error, 130 interrupted."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        return sub

    wait_help = (
        "show progress until every image is COMPLETED or FAILED; exit 1 if any FAILED "
        "(with --json, print their final details as a JSON list)"
    )

    build = command("build", "build a new image for one or more targets (POST /imagefactory/images)")
    build.add_argument(
        "template",
        metavar="TEMPLATE_FILE",
        help="TDL template file, - for stdin (an image UUID or http(s) URL is passed on as is)",
    )
    build.add_argument(
        "--targets",
        action="append",
        required=True,
        metavar="NAME[,NAME...]",
        help="target names, comma-separated (e.g. mock)",
    )
    build.add_argument("--wait", action="store_true", help=wait_help)

    rebuild = command("rebuild", "build an existing image again (PUT /imagefactory/images/<id>)")
    rebuild.add_argument("image_id", metavar="IMAGE_ID")
    rebuild.add_argument(
        "--targets",
        action="append",
        required=True,
        metavar="NAME[,NAME...]",
        help="target names, comma-separated (e.g. mock)",
    )
    rebuild.add_argument(
        "--template",
        metavar="TEMPLATE_FILE",
        help="a new template (file or -); by default the image's template is rebuilt",
    )
    rebuild.add_argument("--wait", action="store_true", help=wait_help)

    push = command("push", "push a COMPLETED target image to a provider (POST /imagefactory/provider_images)")
    push.add_argument("target_image_id", metavar="TARGET_IMAGE_ID")
    push.add_argument("--provider", required=True, metavar="NAME", help="provider name (e.g. mock)")
    push.add_argument(
        "--credentials",
        required=True,
        metavar="FILE",
        help="file with the provider credentials XML (- for stdin); sent, never printed",
    )
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
    """``argv`` parsed, every connection option present (with its default when not given).

    argparse exits (SystemExit) on usage errors, ``--help`` and ``--version``; CLIError for
    options that exclude each other.
    """
    args = build_parser().parse_args(argv)
    for name, value in (("url", None), ("insecure", False), ("ca_file", None), ("json", False), ("config", None)):
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.insecure and args.ca_file:
        raise CLIError("--insecure and --ca-file exclude each other")
    return args
