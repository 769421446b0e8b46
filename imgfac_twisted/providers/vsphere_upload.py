"""The disk's upload to an import lease's device URL: streamed from disk, counted, kept alive, stoppable.

It runs on the cloud door (blocking).  The vmdk (or the OVA member that is
the vmdk) is read in 1 MiB pieces and sent as one request's body
(``Content-Length`` known up front: nothing is held whole in memory).  Every
``KEEPALIVE_EVERY`` seconds it calls the given ``keep_alive`` with how far
it got (``HttpNfcLeaseProgress``), from its own thread, so the lease lives
however many threads the door has.  :meth:`DiskUpload.stop` ends it from
another thread: the next piece is not sent, and a socket stuck in a write
is shut down.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from .vsphere_calls import CALL_TIMEOUT, Refused, UploadStopped
from .vsphere_disk import DiskSource

PIECE_BYTES = 1024 * 1024
#: vCenter ends a lease left without progress for 5 minutes; well inside that.
KEEPALIVE_EVERY = 20.0
#: The body type vSphere expects for a streamOptimized disk.
STREAM_VMDK = "application/x-vnd.vmware-streamVmdk"


class DiskUpload:
    """One upload of a DiskSource to a device URL."""

    def __init__(
        self,
        source: DiskSource,
        url: str,
        create: bool,
        context: ssl.SSLContext | None,
        keep_alive: Callable[[int], None],
        timeout: float = CALL_TIMEOUT,
        cookie: str = "",
    ) -> None:
        self._source = source
        self._url = urlsplit(url)
        # govmomi's rule: a device the lease creates takes PUT, an existing one a streamed POST.
        self._method = "PUT" if create else "POST"
        self._context = context
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._cookie = cookie
        self._connection: http.client.HTTPConnection | None = None
        #: Bytes sent so far (read by the reactor thread for progress; an int is safe to share).
        self.sent = 0
        self.stopped = False

    def run(self) -> None:
        """Send the disk; Refused when the host refuses it, UploadStopped once stopped (blocking)."""
        connection = self._connection = self._connect()
        try:
            connection.putrequest(self._method, self._url.path + (f"?{self._url.query}" if self._url.query else ""))
            connection.putheader("Content-Type", STREAM_VMDK)
            connection.putheader("Content-Length", str(self._source.size))
            if self._cookie:
                connection.putheader("Cookie", self._cookie)
            connection.endheaders()
            try:
                self._send_body(connection)
            except OSError as error:
                if self.stopped:
                    raise
                # A host that refuses early answers before it has read everything: its words say more.
                answer = _answer_after(connection, error)
            else:
                answer = connection.getresponse()
            said = answer.read(500).decode("utf-8", "replace").strip()
        except OSError as error:
            if self.stopped:
                raise UploadStopped("the upload was stopped") from None
            raise Refused(f"cannot send the disk to {self._url.netloc}: {error}") from None
        finally:
            connection.close()
        if not 200 <= answer.status < 300:
            raise Refused(f"the host refused the disk: HTTP {answer.status} {answer.reason} {said[:200]}".strip())

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._url.hostname or "", self._url.port
        if self._url.scheme == "https":
            context = self._context or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=self._timeout, context=context)
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    def _send_body(self, connection: http.client.HTTPConnection) -> None:
        source = self._source
        last_alive = time.monotonic()
        with open(source.path, "rb") as stream:
            stream.seek(source.offset)
            remaining = source.size
            while remaining:
                if self.stopped:
                    raise UploadStopped("the upload was stopped")
                piece = stream.read(min(PIECE_BYTES, remaining))
                if not piece:
                    raise Refused(f"the image file ended {remaining} bytes before the disk's end")
                connection.send(piece)
                remaining -= len(piece)
                self.sent += len(piece)
                if time.monotonic() - last_alive >= KEEPALIVE_EVERY:
                    self._keep_alive(self.percent())
                    last_alive = time.monotonic()

    def percent(self) -> int:
        """How much of the disk was sent (0..100)."""
        return 100 * self.sent // self._source.size if self._source.size else 100

    def stop(self) -> None:
        """End the upload (called from the reactor thread): no further piece, a stuck write unblocked."""
        self.stopped = True
        connection = self._connection
        sock = getattr(connection, "sock", None) if connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _answer_after(connection: http.client.HTTPConnection, error: OSError) -> http.client.HTTPResponse:
    """The answer a host sent before it stopped reading; ``error`` again when there is none."""
    try:
        return connection.getresponse()
    except (OSError, http.client.HTTPException):
        raise error from None
