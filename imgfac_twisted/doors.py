"""Named doors through which blocking work leaves the reactor thread.

A door runs a plain function somewhere else and hands back a Deferred of its
result.  The store uses a one-thread door (SQLite connections belong to one
thread); cloud SDK calls will use a bounded pool.  Tests use
``imgfac_twisted.testing.InlineDoor``, which runs the function at once.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from .deferreds import settle

T = TypeVar("T")


class IDoor(Interface):
    """Runs blocking functions away from the reactor thread."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Call ``fn(*args, **kwargs)`` elsewhere; fire with its result or failure."""


@implementer(IDoor)
class ThreadDoor(Service):
    """A bounded thread pool, started and stopped with the service tree."""

    def __init__(self, reactor: Any, name: str, threads: int = 1) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self.setName(f"door-{name}")

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Deferred | None:
        super().stopService()
        # Joining waits for the running function to return, so a store write
        # in progress is finished, not cut, when the daemon stops.
        self._pool.stop()
        return None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred:
        """Call ``fn`` on one of the pool's threads."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


#: Threads of the CPU door.  Two: one long validation does not hold up the next request's.
CPU_THREADS = 2


def cpu_door(reactor: Any) -> ThreadDoor:
    """The door for CPU-bound work on request data (parsing and validating a template).

    lxml parses and validates with the GIL released, so the reactor thread
    keeps running while a 1 MiB template is checked for a second or two.
    """
    return ThreadDoor(reactor, "cpu", threads=CPU_THREADS)


def shielded(inner: Deferred, late_failure: str | None = None) -> Deferred:
    """A Deferred with ``inner``'s result whose cancellation leaves ``inner`` running.

    Work that went through a door cannot be stopped half-way (a thread runs
    on): the caller may stop waiting, but the work still lands and its
    result is still seen by whoever else holds ``inner``.  A failure that
    comes after the caller stopped waiting is logged with ``late_failure``
    as the message when one is given, else dropped.
    """
    outer: Deferred = Deferred(lambda _: None)

    def forward(result: Any) -> None:
        if outer.called and isinstance(result, Failure) and late_failure is not None:
            Logger().failure(late_failure, result)
        settle(outer, result)

    inner.addBoth(forward)
    return outer
