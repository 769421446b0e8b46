"""The HTTP site: a request class that caps bodies, and the site that serves the API."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ..metrics import Metrics


class CappedRequest(Request):
    """A request that keeps at most ``max_body_bytes`` of its body.

    A larger body is read and dropped as it arrives (memory stays bounded)
    and the request is marked ``too_large``; the root resource answers 413.
    """

    max_body_bytes = 2 * 1024 * 1024
    too_large = False

    def gotLength(self, length: int | None) -> None:
        self._received = 0
        if length is not None and length > self.max_body_bytes:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.max_body_bytes:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)

    _hidden_content_type: Sequence[bytes] | None = None

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.too_large and self.content is not None:
            # Nothing of the body is kept; parse no arguments out of it.
            self.content.seek(0)
            self.content.truncate()
        content_type = self.requestHeaders.getRawHeaders(b"content-type")
        if content_type and content_type[0].split(b";")[0].strip().lower() == b"multipart/form-data":
            # twisted.web would parse a multipart POST body itself and answer a
            # malformed one with a bare 400 (no JSON, no OAuth check); hide the
            # type from it until the request is handed to the resource.
            self._hidden_content_type = content_type
            self.requestHeaders.removeHeader(b"content-type")
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if self._hidden_content_type is not None:
            self.requestHeaders.setRawHeaders(b"content-type", self._hidden_content_type)
        super().process()


def body_cap_exceeded(request: IRequest) -> int | None:
    """The ``max_body_bytes`` a request's body went over (see CappedRequest); None when it did not."""
    if not getattr(request, "too_large", False):
        return None
    cap: int = getattr(request, "max_body_bytes", CappedRequest.max_body_bytes)
    return cap


class _MeteredSite(Site):
    """A Site that counts every answered request, and writes an access log only when given a file."""

    def __init__(self, root: Resource, access_log: str | None, metrics: Metrics) -> None:
        super().__init__(root, logPath=access_log)
        self._access_log = access_log
        self._metrics = metrics

    def log(self, request: http.Request) -> None:
        self._metrics.http_request(request.path.split(b"/")[1:], request.method, request.code)
        # Without a path twisted.web writes an access line per request into the
        # daemon's log; that costs about a fifth of a poll's time and buries the
        # build events.  The access_log option names a file for one.
        if self._access_log is not None:
            super().log(request)


def make_site(root: Resource, max_body_bytes: int, access_log: str | None, metrics: Metrics) -> Site:
    """A Site serving ``root`` with capped request bodies, request metrics and, when asked, an access log."""
    cap = max_body_bytes

    class SiteRequest(CappedRequest):
        max_body_bytes = cap

    site = _MeteredSite(root, access_log, metrics)
    site.requestFactory = SiteRequest
    return site
