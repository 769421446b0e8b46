"""What the CLI shows: tables, progress bars on a terminal, plain lines in a pipe; waiting for builders to end."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .settings import EXIT_FAILED, EXIT_OK, FINAL_STATUSES, PIPE_WIDTH, POLL_INTERVAL


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
    style = {
        "COMPLETED": "green",
        "FAILED": "bold red",
        "BUILDING": "cyan",
        "PUSHING": "cyan",
        "PENDING": "yellow",
        "NEW": "yellow",
    }.get(status, "")
    return Text(status or "?", style=style)


def target_or_provider(builder: Mapping[str, Any]) -> str:
    """What a builder builds for (its target) or pushes to (its provider)."""
    if builder.get("operation") == "push":
        return str(builder.get("provider") or "")
    return str(builder.get("target") or "")


DETAIL_FIELDS = (
    "id",
    "operation",
    "status",
    "completed",
    "status_detail",
    "target",
    "provider",
    "image_id",
    "build_id",
    "target_image_id",
    "provider_account_identifier",
    "identifier_on_provider",
    "href",
)


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
        table.add_row(
            _cell(builder.get("id")),
            _cell(builder.get("operation")),
            _cell(target_or_provider(builder)),
            _status_text(str(builder.get("status") or "")),
            _cell(f"{builder.get('completed', 0)}%"),
            _cell(builder.get("status_detail")),
        )
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


def wait_for(
    items: Sequence[Watched],
    fetch: Callable[[str], dict[str, Any]],
    console: Console,
    interval: float = POLL_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
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


def _wait_with_lines(
    items: Sequence[Watched],
    fetch: Callable[[str], dict[str, Any]],
    console: Console,
    interval: float,
    sleep: Callable[[float], None],
) -> None:
    while True:
        for item in _poll_round(items, fetch):
            plain(console, status_line(item))
        if all(item.final for item in items):
            return
        sleep(interval)


def _bar_status(item: Watched) -> str:
    style = {"COMPLETED": "green", "FAILED": "bold red"}.get(item.status, "cyan")
    return f"[{style}]{escape(item.status or '...')}[/]"


def _wait_with_bars(
    items: Sequence[Watched],
    fetch: Callable[[str], dict[str, Any]],
    console: Console,
    interval: float,
    sleep: Callable[[float], None],
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            id(item): progress.add_task(
                escape(f"{item.kind} {item.id[:8]} {item.label}"), total=100, status=_bar_status(item)
            )
            for item in items
        }
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
