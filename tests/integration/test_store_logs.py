"""Builders' logs kept in the PostgreSQL store (``jobs.logs.StoreLogs``): the same lines, bytes and offsets
as the file logs (``BuilderLogs``), seen from every node, in the order they were appended."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from imgfac_twisted.jobs.logs import MAX_READ_BYTES, BuilderLogs, IBuilderLogs, StoreLogs
from imgfac_twisted.model import iso8601_utc
from imgfac_twisted.store.postgres import PostgresStore
from imgfac_twisted.testing import InlineDoor, result_of


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    instance = PostgresStore(postgres_url, InlineDoor())
    instance.thd_open()
    yield instance
    instance.thd_close()


def write_both(logs: IBuilderLogs, clock: Clock) -> bytes:
    for message in ("started", "température 20°", "ended"):
        result_of(logs.append("b1", message))
        clock.advance(1.5)
    return result_of(logs.read("b1"))


def test_store_logs_read_back_as_the_file_logs_do(store: PostgresStore, tmp_path: Path) -> None:
    """The same messages at the same times give the same bytes in the store as in the files."""
    store_clock, files_clock = Clock(), Clock()
    in_store = write_both(StoreLogs(store, store_clock), store_clock)
    in_files = write_both(BuilderLogs(str(tmp_path), InlineDoor(), files_clock), files_clock)
    assert in_store == in_files
    assert in_store.decode("utf-8").splitlines()[1] == f"{iso8601_utc(1.5)} température 20°"


def test_every_node_reads_the_log_from_any_offset(store: PostgresStore, postgres_url: str) -> None:
    """Another node's StoreLogs reads the lines, from a byte offset; reads are capped at MAX_READ_BYTES."""
    clock = Clock()
    clock.advance(1_800_000_000)
    writer = StoreLogs(store, clock)
    result_of(writer.append("b1", "x" * (MAX_READ_BYTES + 10)))
    result_of(writer.append("b1", "next"))
    other = PostgresStore(postgres_url, InlineDoor())
    other.thd_open()
    try:
        reader = StoreLogs(other, Clock())
        assert len(result_of(reader.read("b1"))) == MAX_READ_BYTES
        stamp = iso8601_utc(1_800_000_000)
        whole_length = len(f"{stamp} ") + MAX_READ_BYTES + 11 + len(f"{stamp} next\n")
        tail = result_of(reader.read("b1", whole_length - 5))
        assert tail == b"next\n"
        assert result_of(reader.read("b1", whole_length)) == b""
        assert result_of(reader.read("unknown")) == b""
    finally:
        other.thd_close()


class SlowStore:
    """An ILogStore whose writes fire when the test says (or fail), to see what StoreLogs queues."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, list[str], Deferred[None]]] = []
        self.failing = False

    def append_log(self, builder_id: str, lines: Sequence[str]) -> Deferred[None]:
        if self.failing:
            self.failing = False
            return fail(OSError("disk on fire"))
        written: Deferred[None] = Deferred()
        self.writes.append((builder_id, list(lines), written))
        return written

    def read_log(self, builder_id: str, offset: int, limit: int) -> Deferred[bytes]:
        raise NotImplementedError


def test_lines_are_written_in_order_the_ones_that_wait_together() -> None:
    """While a builder's line is being written, its next lines wait and go in one write after it, in order;
    another builder's lines do not wait for it."""
    slow = SlowStore()
    logs = StoreLogs(slow, Clock())  # type: ignore[arg-type]
    first = logs.append("b1", "one")
    second, third = logs.append("b1", "two"), logs.append("b1", "three")
    logs.append("b2", "other")
    assert [(b, [line.split(" ", 1)[1] for line in lines]) for b, lines, _ in slow.writes] == [
        ("b1", ["one"]),
        ("b2", ["other"]),
    ]
    assert not first.called
    slow.writes[0][2].callback(None)
    assert first.called and not second.called
    assert [line.split(" ", 1)[1] for line in slow.writes[2][1]] == ["two", "three"]
    slow.writes[2][2].callback(None)
    assert second.called and third.called


def test_a_line_that_cannot_be_written_is_reported_and_the_next_ones_go_on() -> None:
    """A failed write fires the append's Deferred with None (the build goes on) and is logged; later lines
    are written."""
    slow = SlowStore()
    logs = StoreLogs(slow, Clock())  # type: ignore[arg-type]
    slow.failing = True
    lost = logs.append("b1", "lost")
    assert result_of(lost) is None
    kept = logs.append("b1", "kept")
    assert [line.split(" ", 1)[1] for line in slow.writes[0][1]] == ["kept"]
    slow.writes[0][2].callback(None)
    assert kept.called


def test_a_cancelled_wait_does_not_stop_the_writes() -> None:
    """A caller that stops waiting for its line (its builder was cancelled) leaves the writes going on."""
    slow = SlowStore()
    logs = StoreLogs(slow, Clock())  # type: ignore[arg-type]
    waiting = logs.append("b1", "one")
    waiting.cancel()
    waiting.addErrback(lambda _: None)
    logs.append("b1", "two")
    slow.writes[0][2].callback(None)
    assert [line.split(" ", 1)[1] for line in slow.writes[1][1]] == ["two"]
