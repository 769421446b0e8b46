"""Small Deferred helpers for the plumbing the package repeats.

- :func:`observe`: a new Deferred that fires once another has a result,
  leaving that result to the other's own callbacks;
- :func:`settle`: fire a Deferred with a result or a Failure, unless
  something fired it already;
- :class:`Wakeup`: a loop waits until something happened since it last looked;
- :class:`InFlight`: Deferreds still running, so that a stop can wait for them
  (and fire-and-forget work whose failures are logged, not lost).

None of them touches the reactor: they work the same under a ``Clock``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")


def observe(deferred: Deferred[Any]) -> Deferred[None]:
    """A Deferred that fires with None once ``deferred`` has a result, success or failure.

    ``deferred``'s result passes on unchanged to its later callbacks.
    Cancelling the returned Deferred stops the wait only, not ``deferred``.
    """
    ended: Deferred[None] = Deferred(lambda _: None)

    def fire(result: T) -> T:
        settle(ended, None)
        return result

    deferred.addBoth(fire)
    return ended


def settle(deferred: Deferred[T], result: T | Failure) -> None:
    """Fire ``deferred`` with ``result`` (its errback for a Failure) unless it has fired already.

    A Deferred cancelled by its waiter has fired already (with CancelledError):
    the work it stood for may still end later, and its result then goes nowhere.
    """
    if deferred.called:
        return
    if isinstance(result, Failure):
        deferred.errback(result)
    else:
        deferred.callback(result)


class Wakeup:
    """Something happened since :meth:`clear`; :meth:`wait` until it does.

    For a loop that reacts to several Deferreds ending in any order: each of
    them pokes, the loop clears, looks at what changed, and waits.
    """

    def __init__(self) -> None:
        self._happened = False
        self._waiter: Deferred[None] | None = None

    def clear(self) -> None:
        """Forget the pokes seen so far."""
        self._happened = False

    def poke(self) -> None:
        """Something happened: wake the waiter, or the next one."""
        self._happened = True
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.callback(None)

    def wait(self) -> Deferred[None]:
        """Fire at once if poked since the last clear or wait; else at the next poke."""
        waiter: Deferred[None] = Deferred()
        if self._happened:
            self._happened = False
            waiter.callback(None)
        else:
            self._waiter = waiter
        return waiter


class InFlight:
    """Deferreds still running: added as they start, dropped as they end.

    A service's ``stopService`` returns :meth:`ended` so that the daemon
    stops only after the work it started has finished.
    """

    def __init__(self) -> None:
        self._running: set[Deferred[Any]] = set()

    def __len__(self) -> int:
        return len(self._running)

    def add(self, deferred: Deferred[T]) -> Deferred[T]:
        """Track ``deferred`` until it has a result; return it, its result untouched."""
        self._running.add(deferred)

        def drop(result: Any) -> Any:
            self._running.discard(deferred)
            return result

        deferred.addBoth(drop)
        return deferred

    def run_logged(self, deferred: Deferred[Any], log: Logger, message: str, **fields: Any) -> None:
        """Track fire-and-forget work: nobody waits for its result; its failure is logged with ``message``."""
        self.add(deferred).addErrback(lambda failure: log.failure(message, failure, **fields))

    def ended(self) -> Deferred[None]:
        """Fire with None once every Deferred tracked now has a result.

        Cancelling the returned Deferred (a bounded wait timing out) stops
        the wait only: the tracked work runs on and stays tracked.
        """
        pending = list(self._running)
        ended: Deferred[None] = Deferred(lambda _: None)
        remaining = len(pending)

        def one_ended(_: None) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                settle(ended, None)

        for deferred in pending:
            observe(deferred).addCallback(one_ended)
        if not pending:
            ended.callback(None)
        return ended
