"""Named doors through which blocking work leaves the reactor thread.

A door runs a plain function somewhere else and hands back a Deferred of its
result.  The store uses a one-thread door (SQLite connections belong to one
thread); cloud SDK calls will use a bounded pool.  Tests use
``imgfac_twisted.testing.InlineDoor``, which runs the function at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from .deferreds import settle

T = TypeVar("T")


class IDoor(Interface):
    """Runs blocking functions away from the reactor thread."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call ``fn(*args, **kwargs)`` elsewhere; fire with its result or failure."""


@implementer(IDoor)
class ThreadDoor(Service):
    """A bounded thread pool, started and stopped with the service tree."""

    def __init__(self, reactor: IReactorFromThreads, name: str, threads: int = 1) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self.setName(f"door-{name}")

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        # Joining waits for the running function to return, so a store write
        # in progress is finished, not cut, when the daemon stops.
        self._pool.stop()
        return None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``fn`` on one of the pool's threads."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


#: Threads of the CPU door.  One: RELAX NG validation is serialized anyway (``tdl_schema``),
#: and a second busy thread would only compete with the reactor for the machine's cores.
CPU_THREADS = 1
#: How much nicer than the reactor the CPU door's threads run (Linux: per thread).
CPU_NICENESS = 10


class CpuDoor(ThreadDoor):
    """A ThreadDoor whose threads run at a lower scheduling priority than the reactor's.

    Validation releases the GIL, so the reactor and the door's thread run
    truly in parallel; on a busy machine the kernel then decides who runs,
    and a reactor that waits for a time slice is late.  The lower priority
    makes the kernel prefer the reactor thread.
    """

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``fn`` on the door's thread, lowering that thread's priority first (once)."""
        return super().run(_deprioritized, fn, *args, **kwargs)


_lowered = threading.local()


def _deprioritized(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, on a thread whose niceness was raised by CPU_NICENESS (on the first call)."""
    if not getattr(_lowered, "done", False):
        _lowered.done = True
        try:
            # Linux applies a thread's own id to that thread alone.
            os.setpriority(
                os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + CPU_NICENESS
            )
        except (AttributeError, OSError):
            pass  # not Linux, or not allowed: the door still works, at the same priority
    return fn(*args, **kwargs)


def cpu_door(reactor: IReactorFromThreads) -> ThreadDoor:
    """The door for CPU-bound work on request data (parsing and validating a template).

    lxml parses and validates with the GIL released, so the reactor thread
    keeps running while a 1 MiB template is checked for a second or two.
    """
    return CpuDoor(reactor, "cpu", threads=CPU_THREADS)


def shielded(inner: Deferred[T], late_failure: str | None = None) -> Deferred[T]:
    """A Deferred with ``inner``'s result whose cancellation leaves ``inner`` running.

    Work that went through a door cannot be stopped half-way (a thread runs
    on): the caller may stop waiting, but the work still lands and its
    result is still seen by whoever else holds ``inner``.  A failure that
    comes after the caller stopped waiting is logged with ``late_failure``
    as the message when one is given, else dropped.
    """
    outer: Deferred[T] = Deferred(lambda _: None)

    def forward(result: Any) -> None:
        if outer.called and isinstance(result, Failure) and late_failure is not None:
            Logger().failure(late_failure, result)
        settle(outer, result)

    inner.addBoth(forward)
    return outer
