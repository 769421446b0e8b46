"""Running tools (qemu-img, tar, mke2fs, ...) without blocking the reactor.

``run_process`` starts a program through a ProcessProtocol, hands each line
it prints to a callback (for progress), keeps the last lines for error
messages, enforces a timeout, and kills the program when the Deferred is
cancelled.  It is the door every external tool goes through.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessProtocol, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .errors import ImageFactoryError

#: Lines of output kept for the message of a failed run.
TAIL_LINES = 20


class ProcessFailed(ImageFactoryError):
    """A tool exited with an error, was killed, or ran past its time."""


@dataclass(frozen=True)
class ProcessResult:
    """What a tool printed (both streams, interleaved by line) once it exited 0."""

    output: str


class _LineCollector(ProcessProtocol):
    """Splits output into lines (on \\n and \\r: progress bars redraw with \\r)."""

    def __init__(self, name: str, on_line: Callable[[str], None] | None, done: Deferred[ProcessResult]) -> None:
        self._name = name
        self._on_line = on_line
        self._done = done
        self._partial = {1: b"", 2: b""}
        self._output: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.why_stopped: str | None = None

    def childDataReceived(self, fd: int, data: bytes) -> None:
        pending = self._partial.get(fd, b"") + data
        pieces = pending.replace(b"\r", b"\n").split(b"\n")
        self._partial[fd] = pieces.pop()
        for piece in pieces:
            self._line(piece)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        self._output.append(line)
        self.tail.append(line)
        if self._on_line is not None:
            self._on_line(line)

    def processEnded(self, reason: Failure) -> None:
        for fd in (1, 2):
            if self._partial.get(fd):
                self._line(self._partial[fd])
        if self._done.called:
            return
        if reason.check(ProcessDone):
            self._done.callback(ProcessResult("\n".join(self._output)))
            return
        if self.why_stopped is not None:
            message = f"{self._name} {self.why_stopped}"
        elif isinstance(reason.value, ProcessTerminated) and reason.value.signal is not None:
            message = f"{self._name} was killed by signal {reason.value.signal}"
        else:
            message = f"{self._name} exited with status {getattr(reason.value, 'exitCode', '?')}"
        if self.tail:
            message += ": " + " | ".join(list(self.tail)[-5:])
        self._done.errback(ProcessFailed(message))


class ProcessReactor(Protocol):
    """What running a tool needs of the reactor: IReactorProcess to spawn it, IReactorTime for its timeouts."""

    def spawnProcess(
        self,
        processProtocol: IProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
    ) -> IProcessTransport: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall: ...

    def seconds(self) -> float: ...


def run_process(
    reactor: ProcessReactor,
    argv: Sequence[str],
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> Deferred[ProcessResult]:
    """Run ``argv``; fire with its ProcessResult, or fail with ProcessFailed.

    Cancelling the Deferred (or passing ``timeout`` seconds) kills the tool:
    SIGTERM, then SIGKILL two seconds later if it is still there.  ``on_line``
    gets every line printed on either stream (``\r`` ends a line too).
    """
    name = os.path.basename(argv[0])
    protocol: _LineCollector

    def cancel(done: Deferred[ProcessResult]) -> None:
        stop("was cancelled")

    done: Deferred[ProcessResult] = Deferred(cancel)
    protocol = _LineCollector(name, on_line, done)
    process = reactor.spawnProcess(protocol, argv[0], list(argv), env=env if env is not None else dict(os.environ))

    def stop(why: str) -> None:
        if protocol.why_stopped is not None:
            return
        protocol.why_stopped = why
        _signal(process, signal.SIGTERM)
        reactor.callLater(2, _signal, process, signal.SIGKILL)

    timer = reactor.callLater(timeout, stop, f"ran longer than {timeout:g} s")

    def finished(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    # A cancelled Deferred fails at once with CancelledError; the tool gets
    # SIGTERM now and, if it lingers, SIGKILL; its late end is ignored.
    return done.addBoth(finished)


def _signal(process: IProcessTransport, number: int) -> None:
    try:
        process.signalProcess(number)
    except ProcessExitedAlready:
        pass
