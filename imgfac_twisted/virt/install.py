"""The install watcher: boots an installer in a libvirt domain and follows it to the end.

``run_install`` is a small state machine driven by the injected clock::

    STARTING --(domain defined and started)--> INSTALLING --(guest powered off)--> DONE
        \\                                          \\
         `--(libvirt error, cancel)--> FAILED         `--(timeout, crash, question, libvirt error, cancel)--> FAILED

Every ``poll_interval`` seconds one call on the connection's thread reads the
domain's state, the write counters of its disk and the new bytes of the
serial console log.  An installer that stops to ask a question (its answer
file left one open) fails at once, with the question in the reason.
Whatever the end, the domain is destroyed and undefined before the returned
Deferred fires, so the caller may then remove the disk.  The blocking libvirt
calls are in ``calls``; what to boot and how to tell its end, in ``spec``;
the start-up sweep of leftover domains, in ``leftovers``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..deferreds import settle
from .calls import Condition, Observation, thd_define_and_start, thd_observe, thd_tear_down
from .connection import LibvirtConnection
from .console import ConsoleCursor, ConsoleTail, QuestionSpotter
from .domain import DOMAIN_TYPES, domain_xml
from .spec import DOMAIN_PREFIX, InstallFailed, InstallSpec, Verdict, WatchRules

#: The OS plug-ins reach the virt layer through this module alone (``os.vm_install``
#: imports it when first needed): what it needs of ``spec`` is named here too.
__all__ = [
    "DOMAIN_PREFIX",
    "InstallFailed",
    "InstallProgress",
    "InstallSpec",
    "InstallState",
    "Verdict",
    "WatchRules",
    "run_install",
]

#: How many of the console's last lines end a failure's reason.
CONSOLE_LINES_IN_REASON = 20
#: Progress figures: reported once the domain runs, and the most an estimate
#: reaches before the guest has really powered off.
PROGRESS_STARTED = 5
PROGRESS_CEILING = 95
#: The share of the disk an install is expected to write (see InstallProgress).
EXPECTED_DISK_FILL = 0.25
#: Polls in a row that may fail before a libvirt error fails the install:
#: while QEMU exits, libvirt may still call the domain running but no longer
#: answer for its disk.
OBSERVE_ATTEMPTS = 3

_log = Logger()


class InstallState(enum.Enum):
    """Where an install is."""

    STARTING = "starting"  # the domain is being defined and started
    INSTALLING = "installing"  # the guest runs; its state, disk writes and console are polled
    DONE = "done"  # the guest powered itself off; the domain is gone
    FAILED = "failed"  # stopped for a reason (or cancelled); the domain is gone


_ALLOWED = {
    InstallState.STARTING: {InstallState.INSTALLING, InstallState.FAILED},
    InstallState.INSTALLING: {InstallState.DONE, InstallState.FAILED},
    InstallState.DONE: set(),
    InstallState.FAILED: set(),
}


def run_install(
    connection: LibvirtConnection,
    spec: InstallSpec,
    *,
    domain_type: str,
    clock: IReactorTime,
    inactivity_timeout: float,
    total_timeout: float,
    progress: Callable[[int], None],
    log: Callable[[str], None],
    poll_interval: float = 1.0,
    rules: WatchRules | None = None,
) -> Deferred[None]:
    """Define and start the domain, watch it until the guest powers itself off (fires None),
    or fail with InstallFailed (no disk activity for inactivity_timeout, whole install past
    total_timeout, libvirt error, domain crashed). progress(0..100) moves while it runs; every
    complete line the guest prints on the serial console is passed to log(line). Cancelling the
    Deferred destroys the domain. The domain is always destroyed and undefined at the end."""
    if domain_type not in DOMAIN_TYPES:
        raise ValueError(f"domain type must be one of {', '.join(DOMAIN_TYPES)}, not {domain_type!r}")
    rules = rules or WatchRules(inactivity_timeout=inactivity_timeout)
    watch = _InstallWatch(connection, spec, domain_type, clock, rules, total_timeout, progress, log, poll_interval)
    return watch.start()


@dataclass(frozen=True)
class _Limits:
    inactivity_timeout: float | None
    total_timeout: float
    poll_interval: float


class _Outcome(enum.Enum):
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _InstallWatch:
    """One install, from define to undefine; see the module docstring for its states."""

    def __init__(
        self,
        connection: LibvirtConnection,
        spec: InstallSpec,
        domain_type: str,
        clock: IReactorTime,
        rules: WatchRules,
        total_timeout: float,
        progress: Callable[[int], None],
        console_line: Callable[[str], None],
        poll_interval: float,
    ) -> None:
        self._connection = connection
        self._spec = spec
        self._xml = domain_xml(spec, domain_type)
        self._clock = clock
        self._rules = rules
        self._limits = _Limits(rules.inactivity_timeout, total_timeout, poll_interval)
        self._report_progress = progress
        self._console_line = console_line
        self.state = InstallState.STARTING
        self.result: Deferred[None] = Deferred(self._cancel)
        self._console = ConsoleTail(CONSOLE_LINES_IN_REASON)
        self._console_cursor = ConsoleCursor()
        self._questions = QuestionSpotter()
        self._console_problem: str | None = None
        self._poller = LoopingCall(self._poll)
        self._poller.clock = clock
        self._deadline: Any = None
        self._estimate: InstallProgress | None = None
        self._started_at = 0.0
        self._last_activity = 0.0
        self._last_writes = (0, 0)
        self._failed_polls = 0
        self._cancelled = False
        #: True while _cancel holds the result back (see there).
        self._holding_result = False
        self._finishing = False

    # --- the states ------------------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        _log.info("install {domain}: starting", domain=self._spec.name)
        starting = self._connection.run(thd_define_and_start, self._xml, self._spec.disk_path)
        starting.addCallbacks(self._started, self._start_failed)
        starting.addErrback(self._internal_error)
        return self.result

    def _started(self, disk_size: int) -> None:
        if self._cancelled:
            # Cancelled while libvirt was starting the domain.
            self._finish(_Outcome.CANCELLED)
            return
        self._move(InstallState.INSTALLING)
        self._started_at = self._last_activity = self._clock.seconds()
        self._estimate = InstallProgress(disk_size, self._limits.total_timeout)
        self._report_progress(PROGRESS_STARTED)
        # The total timeout must hold even if a libvirt call never returns.
        self._deadline = self._clock.callLater(
            self._limits.total_timeout,
            self._finish,
            _Outcome.FAILED,
            f"the {self._rules.activity} took longer than {self._limits.total_timeout:g} s",
        )
        polling = self._poller.start(self._limits.poll_interval, now=False)
        polling.addErrback(self._internal_error)

    def _start_failed(self, failure: Failure) -> None:
        self._finish(_Outcome.FAILED, _failure_reason(failure, "the domain could not be started"))

    def _poll(self) -> Deferred[None] | None:
        # Returning the Deferred makes the LoopingCall wait for it: a slow
        # libvirt never has two polls of one install queued.
        if self._finishing:
            return None
        observing = self._connection.run(thd_observe, self._spec.name, self._spec.console_log, self._console_cursor)
        judged = observing.addCallbacks(self._observed, self._observe_failed)
        # A LoopingCall stops on its first failure: never hand it one.
        judged.addErrback(self._internal_error)
        return judged

    def _observed(self, seen: Observation) -> None:
        if self._finishing:
            return
        self._failed_polls = 0
        self._console_cursor = seen.console_cursor
        lines = self._console.feed(seen.console)
        self._emit(lines)
        for piece in self._console.pending():
            self._judge(piece)
        if self._finishing:
            return
        if seen.console_problem is not None and self._console_problem is None:
            # Said once, in the build log, so that a silent console is not taken for a silent guest.
            self._console_problem = seen.console_problem
            self._console_line(f"({seen.console_problem})")
        if seen.condition is Condition.POWERED_OFF and self._rules.power_off_failure is not None:
            self._finish(_Outcome.FAILED, self._rules.power_off_failure)
        elif seen.condition is Condition.POWERED_OFF:
            self._finish(_Outcome.DONE)
        elif seen.condition is Condition.CRASHED:
            self._finish(_Outcome.FAILED, f"the guest crashed ({seen.detail})")
        elif seen.condition is Condition.BROKEN:
            self._finish(_Outcome.FAILED, f"the domain stopped unexpectedly ({seen.detail})")
        else:
            question = self._questions.spot(lines, self._console.pending())
            if question is not None:
                # Nobody will answer: waiting for the inactivity timeout would only waste its length.
                self._finish(_Outcome.FAILED, f"the installer stopped to ask a question: {question}")
                return
            self._watch_running(seen.writes)

    def _watch_running(self, writes: tuple[int, int]) -> None:
        now = self._clock.seconds()
        if writes != self._last_writes:
            self._last_writes = writes
            self._last_activity = now
        inactivity_timeout = self._limits.inactivity_timeout
        if inactivity_timeout is not None and now - self._last_activity >= inactivity_timeout:
            self._finish(_Outcome.FAILED, f"no disk activity for {inactivity_timeout:g} s")
            return
        assert self._estimate is not None
        moved = self._estimate.update(writes[1], now - self._started_at)
        if moved is not None:
            self._report_progress(moved)

    def _observe_failed(self, failure: Failure) -> None:
        self._failed_polls += 1
        if self._finishing:
            return
        if self._failed_polls < OBSERVE_ATTEMPTS:
            _log.info(
                "install {domain}: reading the domain failed, will try again: {error}",
                domain=self._spec.name,
                error=failure.getErrorMessage(),
            )
            return
        self._finish(_Outcome.FAILED, _failure_reason(failure, "watching the domain failed"))

    def _finish(self, outcome: _Outcome, reason: str = "") -> None:
        """Stop watching, destroy and undefine the domain, then settle the result."""
        if self._finishing:
            return
        self._finishing = True
        if self._poller.running:
            self._poller.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        tearing_down = self._connection.run(
            thd_tear_down, self._spec.name, self._spec.console_log, self._console_cursor
        )
        tearing_down.addErrback(self._tear_down_failed)
        tearing_down.addCallback(self._torn_down, outcome, reason)
        tearing_down.addErrback(self._settle_after_bug)

    def _tear_down_failed(self, failure: Failure) -> bytes:
        # The next daemon start removes what is left (remove_leftover_domains).
        _log.failure("install {domain}: the domain could not be removed", failure, domain=self._spec.name)
        return b""

    def _torn_down(self, last_console: bytes, outcome: _Outcome, reason: str) -> None:
        self._emit(self._console.feed(last_console))
        self._emit(self._console.flush())
        if outcome is _Outcome.DONE:
            self._move(InstallState.DONE)
            self._report_progress(100)
            _log.info("install {domain}: done", domain=self._spec.name)
            self._settle(None)
            return
        self._move(InstallState.FAILED)
        if outcome is _Outcome.CANCELLED:
            _log.info("install {domain}: cancelled", domain=self._spec.name)
            self._settle(Failure(CancelledError()))
            return
        _log.info("install {domain}: failed: {reason}", domain=self._spec.name, reason=reason)
        self._settle(Failure(InstallFailed(self._with_console(reason))))

    def _settle(self, result: Failure | None) -> None:
        settle(self.result, result)
        if self._holding_result:
            # Only our own pause: the caller's callbacks may pause the result
            # too, when one of them returns a Deferred.
            self._holding_result = False
            self.result.unpause()

    def _cancel(self, result: Deferred[None]) -> None:
        # Deferred.cancel() errbacks with CancelledError as soon as this
        # returns.  Pausing holds that back from the caller's callbacks until
        # the domain is destroyed and undefined, so whoever sees the
        # cancellation may delete the disk at once.
        result.pause()
        self._holding_result = True
        self._cancelled = True
        if self.state is not InstallState.STARTING:
            self._finish(_Outcome.CANCELLED)

    # --- helpers ---------------------------------------------------------------------------------------------

    def _move(self, new: InstallState) -> None:
        if new not in _ALLOWED[self.state]:
            raise AssertionError(f"install {self._spec.name}: {self.state.value} cannot go to {new.value}")
        _log.debug("install {domain}: {old} -> {new}", domain=self._spec.name, old=self.state.value, new=new.value)
        self.state = new

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self._console_line(line)
            self._judge(line)

    def _judge(self, line: str) -> None:
        """Finish as the watch's rules judge ``line`` (only while watching)."""
        if self._rules.judge is None or self._finishing or not line:
            return
        verdict = self._rules.judge(line)
        if verdict is not None:
            self._finish(_Outcome.DONE if verdict.done else _Outcome.FAILED, verdict.reason)

    def _with_console(self, reason: str) -> str:
        lines = list(self._console.last)
        if not lines and self._console_problem is not None:
            return f"{reason}; {self._console_problem}"
        if not lines:
            return f"{reason}; the console printed nothing"
        return f"{reason}; the console's last lines:\n" + "\n".join(lines)

    def _internal_error(self, failure: Failure) -> None:
        _log.failure("install {domain}: unexpected error", failure, domain=self._spec.name)
        self._finish(_Outcome.FAILED, f"internal error: {failure.getErrorMessage()}")

    def _settle_after_bug(self, failure: Failure) -> None:
        _log.failure("install {domain}: unexpected error while finishing", failure, domain=self._spec.name)
        self._settle(Failure(InstallFailed(f"internal error: {failure.getErrorMessage()}")))


def _failure_reason(failure: Failure, doing: str) -> str:
    """A reason naming libvirt's own message for a libvirt error."""
    if type(failure.value).__name__ == "libvirtError":
        return f"{doing}: libvirt: {failure.getErrorMessage()}"
    return f"{doing}: {failure.getErrorMessage()}"


class InstallProgress:
    """The moving figure behind progress(): an estimate, since no installer says how far it is.

    Two measures, the further one wins: the bytes written to the disk against
    EXPECTED_DISK_FILL of its size (a typical OS install fills about a quarter
    of Oz's 10 GiB default disk), and the time spent against the total
    timeout.  The figure runs from PROGRESS_STARTED to PROGRESS_CEILING,
    never goes backwards, and reaches 100 only when the guest powers off.
    """

    def __init__(self, disk_size: int, total_timeout: float) -> None:
        self._expected_bytes = max(1.0, disk_size * EXPECTED_DISK_FILL)
        self._total_timeout = total_timeout
        self.figure = PROGRESS_STARTED

    def update(self, written_bytes: int, elapsed: float) -> int | None:
        """The new figure when it moved, else None."""
        done = max(min(1.0, written_bytes / self._expected_bytes), min(1.0, elapsed / self._total_timeout))
        figure = min(PROGRESS_CEILING, PROGRESS_STARTED + int(done * (PROGRESS_CEILING - PROGRESS_STARTED)))
        if figure <= self.figure:
            return None
        self.figure = figure
        return figure
