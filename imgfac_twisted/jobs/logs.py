"""Each builder's log: a text file of what happened to it, readable over the API.

Lines are appended through a door of their own (one thread, so they stay in
order); the reactor never waits on the disk.
"""

from __future__ import annotations

import os

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..doors import IDoor
from ..model import iso8601_utc

#: The most one read returns; clients page on with ``offset``.
MAX_READ_BYTES = 1024 * 1024


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

    def append(self, builder_id: str, message: str) -> Deferred[None]:
        """Add one time-stamped line.

        A line that cannot be written is reported in the daemon's log; the
        build it describes goes on regardless.
        """
        line = f"{iso8601_utc(self._clock.seconds())} {message}\n"
        return self._door.run(self._thd_append, self.path(builder_id), line).addErrback(self._report, builder_id)

    def _report(self, failure: Failure, builder_id: str) -> None:
        # A cancellation is the builder being stopped, not a log problem:
        # it must reach the work that awaited this line.
        if failure.check(CancelledError):
            failure.raiseException()
        self.log.failure("cannot write the log of builder {builder_id}", failure, builder_id=builder_id)

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
