"""Each builder's log: the time-stamped lines of what happened to it, readable over the API.

Two kinds, one protocol (``IBuilderLogs``): ``BuilderLogs`` keeps them as text files
in the state directory (the embedded SQLite store), appended through a door of their
own (one thread, so they stay in order); ``StoreLogs`` keeps them in a store that
``keeps_logs`` (PostgreSQL, ``ILogStore``), so that every node reads every log.  The
reactor never waits on the disk or the database.
"""

from __future__ import annotations

import os
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..doors import IDoor
from ..model import iso8601_utc
from ..store import ILogStore

#: The most one read returns; clients page on with ``offset``.
MAX_READ_BYTES = 1024 * 1024


class IBuilderLogs(Protocol):
    """What the builders' logs offer, wherever they are kept (a typing protocol: BuilderLogs, StoreLogs)."""

    def stamped(self, message: str) -> str:
        """``message`` as a log line: the time now (UTC, ISO 8601), a space, the message; no newline.

        The updater hands such lines to ``IStore.save_builder(log_lines=...)``.
        """

    def append(self, builder_id: str, message: str) -> Deferred[None]:
        """Add one time-stamped line; a line that cannot be written is reported, and the build goes on."""

    def read(self, builder_id: str, offset: int = 0, limit: int = MAX_READ_BYTES) -> Deferred[bytes]:
        """Fire with up to ``limit`` bytes (at most MAX_READ_BYTES) of the UTF-8 log from byte ``offset``."""


class BuilderLogs:
    """Appends to and reads from ``<state_dir>/builders/<id>/builder.log``."""

    log = Logger()

    def __init__(self, state_dir: str, door: IDoor, clock: IReactorTime) -> None:
        self._state_dir = state_dir
        self._door = door
        self._clock = clock

    def path(self, builder_id: str) -> str:
        """Where the builder's log lies."""
        return os.path.join(self._state_dir, "builders", builder_id, "builder.log")

    def stamped(self, message: str) -> str:
        """``message`` as a log line (see IBuilderLogs.stamped)."""
        return stamped(self._clock, message)

    def append(self, builder_id: str, message: str) -> Deferred[None]:
        """Add one time-stamped line.

        A line that cannot be written is reported in the daemon's log; the
        build it describes goes on regardless.
        """
        line = self.stamped(message) + "\n"
        return self._door.run(self._thd_append, self.path(builder_id), line).addErrback(
            report_failure, self.log, builder_id
        )

    def read(self, builder_id: str, offset: int = 0, limit: int = MAX_READ_BYTES) -> Deferred[bytes]:
        """Fire with up to ``limit`` bytes of the log from ``offset`` (empty if there is none yet)."""
        return self._door.run(self._thd_read, self.path(builder_id), offset, min(limit, MAX_READ_BYTES))

    @staticmethod
    def _thd_append(path: str, line: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(line)

    @staticmethod
    def _thd_read(path: str, offset: int, limit: int) -> bytes:
        try:
            with open(path, "rb") as stream:
                if offset >= os.fstat(stream.fileno()).st_size:
                    return b""
                stream.seek(offset)
                return stream.read(limit)
        except FileNotFoundError:
            return b""


def stamped(clock: IReactorTime, message: str) -> str:
    """``message`` after the time now, UTC, ISO 8601: one log line, without its newline."""
    return f"{iso8601_utc(clock.seconds())} {message}"


def report_failure(failure: Failure, log: Logger, builder_id: str) -> None:
    """Report a line that could not be written (the build goes on), but let a cancellation through."""
    # A cancellation is the builder being stopped, not a log problem:
    # it must reach the work that awaited this line.
    if failure.check(CancelledError):
        failure.raiseException()
    log.failure("cannot write the log of builder {builder_id}", failure, builder_id=builder_id)


class StoreLogs:
    """The builders' logs in a store that keeps them (``ILogStore``: PostgreSQL), read by every node.

    A builder's lines are written in the order they were appended: while one write is
    under way, the lines that come are queued and written together by the next one (the
    store's door has several threads, which would not keep them in order).
    """

    log = Logger()

    def __init__(self, store: ILogStore, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._queued: dict[str, list[tuple[str, Deferred[None]]]] = {}
        self._writing: set[str] = set()

    def stamped(self, message: str) -> str:
        """``message`` as a log line (see IBuilderLogs.stamped)."""
        return stamped(self._clock, message)

    def append(self, builder_id: str, message: str) -> Deferred[None]:
        """Add one time-stamped line; fire once it is stored (or reported as lost: the build goes on)."""
        written: Deferred[None] = Deferred()
        self._queued.setdefault(builder_id, []).append((self.stamped(message), written))
        if builder_id not in self._writing:
            self._write_next(builder_id)
        return written

    def _write_next(self, builder_id: str) -> None:
        batch = self._queued.pop(builder_id, [])
        if not batch:
            self._writing.discard(builder_id)
            return
        self._writing.add(builder_id)
        writing = self._store.append_log(builder_id, [line for line, _ in batch])
        writing.addErrback(report_failure, self.log, builder_id)
        writing.addErrback(lambda _: None)
        writing.addCallback(self._written, builder_id, [written for _, written in batch])

    def _written(self, _: object, builder_id: str, waiting: list[Deferred[None]]) -> None:
        for written in waiting:
            # A caller may have cancelled its wait (its builder stopped); the line was written regardless.
            if not written.called:
                written.callback(None)
        self._write_next(builder_id)

    def read(self, builder_id: str, offset: int = 0, limit: int = MAX_READ_BYTES) -> Deferred[bytes]:
        """Fire with up to ``limit`` bytes of the log from ``offset`` (empty if there is none yet)."""
        return self._store.read_log(builder_id, max(offset, 0), min(limit, MAX_READ_BYTES))
