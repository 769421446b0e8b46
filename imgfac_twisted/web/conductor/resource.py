"""The resources in front of the Conductor routes, and the site root that shares the port with the factory API.

``ConductorResource`` checks, before any routing (so unknown paths are not
answered to strangers): the body size (413), the Basic credentials (401,
bcrypt on a door), the Accept header (406); then takes ActiveResource's
format suffix off the path (aeolus-cli asks for ``images.xml``,
``images/<id>.xml``) and hands the request to the Klein app.  ``SiteRoot`` sends paths under ``/conductor`` there and every
other request, untouched, to the factory's root (its fast read path stays
as it is: one byte comparison more).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ...errors import PayloadTooLarge
from ..basic_auth import BasicAuthenticator
from ..site import body_cap_exceeded
from .errors import NotAcceptable, render_failure

#: Media ranges a client may accept to get this API's XML.
XML_RANGES = frozenset({b"*/*", b"application/*", b"application/xml", b"text/*", b"text/xml"})
#: The OpenAPI document is JSON.
JSON_RANGES = frozenset({b"*/*", b"application/*", b"application/json"})
OPENAPI_PATH = [b"conductor", b"api", b"openapi.json"]
#: ActiveResource's format suffix, optional on every route.
FORMAT_SUFFIX = b".xml"


def without_format_suffix(segments: list[bytes]) -> list[bytes]:
    """The path segments with ``.xml`` taken off the last one (``images.xml`` -> ``images``)."""
    if len(segments) > 2 and segments[-1].endswith(FORMAT_SUFFIX) and len(segments[-1]) > len(FORMAT_SUFFIX):
        return segments[:-1] + [segments[-1][: -len(FORMAT_SUFFIX)]]
    return segments


def accepts(header: bytes | None, ranges: frozenset[bytes]) -> bool:
    """True when the Accept header is absent or names one of ``ranges`` (q=0 ranges do not count)."""
    if header is None or not header.strip():
        return True
    for item in header.split(b","):
        media, *parameters = [part.strip() for part in item.split(b";")]
        refused = any(p.replace(b" ", b"").lower() in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000") for p in parameters)
        if media.lower() in ranges and not refused:
            return True
    return False


class ConductorResource(Resource):
    """Size, credentials and Accept checks, then the Conductor Klein app."""

    isLeaf = True

    def __init__(
        self,
        app_resource: Resource,
        authenticator: BasicAuthenticator,
        fast_read: Callable[[IRequest], bytes | None] | None = None,
    ) -> None:
        """``fast_read`` answers some GETs without the app's routing (None: let the app answer)."""
        super().__init__()
        self._app = app_resource
        self._authenticator = authenticator
        self._fast_read = fast_read

    def render(self, request: IRequest) -> Any:
        cap = body_cap_exceeded(request)
        if cap is not None:
            return render_failure(request, Failure(PayloadTooLarge(f"request body is larger than {cap} bytes")))
        header = request.getHeader(b"authorization")
        if self._authenticator.recently_checked(header) is not None:
            # A poller's credentials, checked moments ago: answered on this turn, without a Deferred.
            return self._answer(request)
        checking = self._authenticator.authenticate(header)
        checking.addCallback(lambda _: self._authorized(request))
        checking.addErrback(lambda failure: self._finish(request, render_failure(request, failure)))
        return NOT_DONE_YET

    def _authorized(self, request: IRequest) -> None:
        if getattr(request, "_disconnected", False):
            return
        answer = self._answer(request)
        if answer is not NOT_DONE_YET:
            self._finish(request, answer)

    def _answer(self, request: IRequest) -> Any:
        """The answer of an authenticated request: bytes, or NOT_DONE_YET when the app finishes it later."""
        ranges = JSON_RANGES if request.postpath == OPENAPI_PATH else XML_RANGES
        if not accepts(request.getHeader(b"accept"), ranges):
            return render_failure(
                request,
                Failure(NotAcceptable("this API answers with application/xml only: accept application/xml (or */*)")),
            )
        request.postpath = without_format_suffix(request.postpath)
        answer = self._read_fast(request) if request.method in (b"GET", b"HEAD") else None
        if answer is None:
            answer = self._app.render(request)
        return answer

    def _read_fast(self, request: IRequest) -> bytes | None:
        if self._fast_read is None:
            return None
        try:
            return self._fast_read(request)
        except Exception:
            return render_failure(request, Failure())

    @staticmethod
    def _finish(request: IRequest, body: bytes) -> None:
        if getattr(request, "_disconnected", False) or getattr(request, "finished", False):
            return
        # As twisted.web does for a body returned by render(): a length, not chunks.
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()


class SiteRoot(Resource):
    """``/conductor/...`` to the Conductor API, everything else to the factory's root."""

    isLeaf = True

    def __init__(self, factory_root: Resource, conductor: Resource) -> None:
        super().__init__()
        self._factory_root = factory_root
        self._conductor = conductor

    def render(self, request: IRequest) -> Any:
        segments = request.postpath
        if segments and segments[0] == b"conductor":
            return self._conductor.render(request)
        return self._factory_root.render(request)
