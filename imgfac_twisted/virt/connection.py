"""One libvirt connection, used only from its own dedicated thread.

libvirt calls block (some for seconds: starting a domain, a daemon that does
not answer), so none of them runs on the reactor.  A virConnect is not meant
to be shared between threads without care, so each LibvirtConnection owns one
thread and the connection lives only there: every call is queued to that
thread in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from ..doors import ThreadDoor

T = TypeVar("T")


class LibvirtConnection(Service):
    """One libvirt connection URI, used only from its own dedicated thread.

    The connection is opened lazily, on the first call, so a daemon that
    never installs a real OS needs neither libvirtd nor a reachable URI.
    A connection found dead is closed and opened again on the next call.
    Stopping the service lets queued calls finish, closes the connection
    and stops the thread.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFromThreads, uri: str) -> None:
        self.uri = uri
        self._door = ThreadDoor(reactor, "libvirt", threads=1)
        self.setName(f"libvirt {uri}")
        #: The open virConnect; read and written only on the door's thread.
        self._connection: Any = None
        self._stopped = False

    def startService(self) -> None:
        super().startService()
        self._door.startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._stopped = True
        if not self._door.running:
            return None
        # The close is queued behind the calls already waiting, so they all
        # run first; once it has run the thread is idle and stops at once.
        closed = self._door.run(self._thd_close)
        closed.addErrback(lambda failure: self.log.failure("closing libvirt {uri} failed", failure, uri=self.uri))
        closed.addBoth(lambda _: self._door.stopService())
        return closed

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``fn(conn, *args, **kwargs)`` on the connection's thread, where ``conn`` is an open
        libvirt.virConnect (opened lazily on first use, re-opened if it died); fire with the result."""
        if self._stopped:
            # A stopped thread pool would drop the call silently: say so instead.
            return fail(RuntimeError(f"the libvirt connection to {self.uri} is stopped"))
        return self._door.run(self._thd_call, fn, args, kwargs)

    def _thd_call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        connection = self._thd_connection()
        try:
            return fn(connection, *args, **kwargs)
        except Exception:
            # libvirt reports a lost daemon only as a failed call: drop a
            # dead connection now so that the next call opens a new one.
            if not _is_alive(connection):
                self._thd_close()
            raise

    def _thd_connection(self) -> Any:
        if self._connection is not None and _is_alive(self._connection):
            return self._connection
        self._thd_close()
        import libvirt

        # Without a handler libvirt prints every error on stderr as well as
        # raising it; the errors reach the caller as libvirtError anyway.
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        self._connection = libvirt.open(self.uri)
        return self._connection

    def _thd_close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close()
        except Exception:
            # A dead connection may refuse to close; it is dropped either way.
            pass


def _is_alive(connection: Any) -> bool:
    try:
        return bool(connection.isAlive() == 1)
    except Exception:
        return False


def _ignore_libvirt_error(context: Any, error: Any) -> None:
    """libvirt's error callback: errors are raised as libvirtError, nothing to print."""
