"""``imagefactory-events``: print the factory's events as they are published on AMQP.

One line per event on standard output, flushed at once: by default the
event as JSON (``{"routing_key": ..., "body": {...}}``, as ``Event.to_json``
writes it), with ``--readable`` a line for people::

    2024-05-01T12:00:00.000Z 3f0c...  build mock  PENDING->BUILDING  40%  detail

It declares the exchange itself, so it may start before the daemon.  Events
published while it is not connected are not seen: it listens live, from an
exclusive queue that goes away with it.  If the connection is lost it
reconnects and subscribes again.  Logs go to standard error; Ctrl-C or
SIGTERM ends it with exit code 0; a broker it cannot reach at start-up ends
it with exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from . import Event
from .amqp import DEFAULT_URL, AmqpBus, BusUnavailable, redacted_url

PROG = "imagefactory-events"
URL_ENV = "IMAGEFACTORY_AMQP_URL"

log = Logger(namespace=PROG)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with the broker URL defaulting to $IMAGEFACTORY_AMQP_URL."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Print Image Factory builder events from the AMQP topic exchange, one line each."
    )
    parser.add_argument(
        "--amqp_url",
        "--amqp-url",
        dest="amqp_url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"broker URL, amqp://user:password@host:port/vhost (default: ${URL_ENV} or {redacted_url(DEFAULT_URL)})",
    )
    parser.add_argument("--exchange", default="imagefactory", help="topic exchange (default: imagefactory)")
    parser.add_argument(
        "--pattern",
        default="#",
        help="routing key pattern: '#' everything (default), '*.*.failed' failures, 'provider_image.#' pushes",
    )
    parser.add_argument(
        "--readable", action="store_true", help="one line per event for people, instead of one JSON object per line"
    )
    return parser.parse_args(argv)


def readable_line(event: Event) -> str:
    """One line for people: time, id, operation, target or provider, old->new status, completed, detail."""
    body = event.body
    operation = body.get("operation") or "?"
    where = body.get("provider") if operation == "push" else body.get("target")
    old = body.get("old_status") or "(none)"
    new = body.get("new_status") or "?"
    completed = body.get("completed")
    line = (
        f"{body.get('timestamp', '?')} {body.get('id', '?')} {operation} {where or '?'} "
        f"{old}->{new} {completed if completed is not None else '?'}%"
    )
    detail = body.get("status_detail")
    if detail:
        line += f" {' '.join(str(detail).split())}"
    return line


class _Printer:
    """Writes each event as a line and flushes; stops the program if the output goes away."""

    def __init__(self, reactor: Any, out: TextIO, readable: bool) -> None:
        self.reactor = reactor
        self.out = out
        self.readable = readable
        self.broken = False

    def __call__(self, event: Event) -> None:
        if self.broken:
            return
        line = readable_line(event) if self.readable else event.to_json()
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (BrokenPipeError, OSError):
            # e.g. piped into `head`: the reader is gone, so are we.
            self.broken = True
            self.reactor.stop()


async def _run(reactor: Any, options: argparse.Namespace) -> None:
    try:
        bus = AmqpBus(reactor, options.amqp_url, options.exchange)
    except (ValueError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    printer = _Printer(reactor, sys.stdout, options.readable)

    async def subscribe() -> None:
        await bus.subscribe(options.pattern, printer)
        log.info(
            "listening for events matching {pattern!r} on exchange {exchange} at {url}",
            pattern=options.pattern,
            exchange=options.exchange,
            url=bus.url,
        )

    # Every (re)connect subscribes afresh: a subscription ends with its connection.
    bus.when_connected(subscribe)
    bus.startService()
    reactor.addSystemEventTrigger("before", "shutdown", bus.stopService)
    try:
        await bus.wait_connected(fail_fast=True)
    except BusUnavailable as e:
        print(f"{PROG}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    await Deferred()  # until SIGINT/SIGTERM stops the reactor (react then exits with 0)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``imagefactory-events`` (the console script); exits the process."""
    options = parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])], redirectStandardIO=False
    )
    react(lambda reactor: _run(reactor, options))


if __name__ == "__main__":
    main()
