"""The one place where errors become HTTP answers for the Conductor API.

Every error body is ``<error><code>...</code><message>...</message></error>``
(``application/xml``), never an HTML page.  The codes are the spec's, plus a
few for what the spec does not cover (auth, content negotiation, routing),
named after their HTTP status: ``Unauthorized`` (401), ``NotFound`` (404, no
such path), ``MethodNotAllowed`` (405), ``NotAcceptable`` (406),
``RequestTooLarge`` (413), ``UnsupportedMediaType`` (415) and
``InternalError`` (500, logged with a request id, no internals shown).
"""

from __future__ import annotations

import uuid

from lxml import etree
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ...errors import AuthenticationFailed, ImageFactoryError, InvalidRequest, PayloadTooLarge, UnknownObject
from ..errors import UnsupportedMediaType

log = Logger()

XML_CONTENT_TYPE = b"application/xml; charset=utf-8"
REALM = b'Basic realm="imagefactory"'


class ConductorError(ImageFactoryError):
    """An error answered with one of the Conductor API's codes and an HTTP status."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class NotAcceptable(ImageFactoryError):
    """The client accepts no type this API answers with."""


def not_found(code: str, message: str) -> ConductorError:
    """A ``...NotFound`` error (404)."""
    return ConductorError(code, 404, message)


def insufficient(message: str) -> ConductorError:
    """``InsufficientParametersSupplied`` (400)."""
    return ConductorError("InsufficientParametersSupplied", 400, message)


def incorrect(message: str) -> ConductorError:
    """``ParameterDataIncorrect`` (400)."""
    return ConductorError("ParameterDataIncorrect", 400, message)


#: Errors that are not ConductorErrors: (kind, HTTP status, code).
_GENERIC: tuple[tuple[type[ImageFactoryError], int, str], ...] = (
    (InvalidRequest, 400, "ParameterDataIncorrect"),
    (AuthenticationFailed, 401, "Unauthorized"),
    (UnknownObject, 404, "NotFound"),
    (NotAcceptable, 406, "NotAcceptable"),
    (PayloadTooLarge, 413, "RequestTooLarge"),
    (UnsupportedMediaType, 415, "UnsupportedMediaType"),
)


def xml_document(request: IRequest, status: int, root: etree._Element) -> bytes:
    """Set the status and XML content type; return the serialized document."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", XML_CONTENT_TYPE)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def error_document(request: IRequest, status: int, code: str, message: str) -> bytes:
    """The ``<error>`` answer."""
    root = etree.Element("error")
    etree.SubElement(root, "code").text = code
    etree.SubElement(root, "message").text = message
    if status == 401:
        request.setHeader(b"www-authenticate", REALM)
    return xml_document(request, status, root)


def render_failure(request: IRequest, failure: Failure) -> bytes:
    """Answer ``request`` for ``failure``, whatever it is."""
    error = failure.value
    if isinstance(error, ConductorError):
        return error_document(request, error.status, error.code, error.message)
    if isinstance(error, ImageFactoryError):
        for kind, status, code in _GENERIC:
            if isinstance(error, kind):
                return error_document(request, status, code, error.message)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        path = request.path.decode("utf-8", "replace")
        if isinstance(error, MethodNotAllowed):
            if error.valid_methods:
                request.setHeader(b"allow", ", ".join(sorted(error.valid_methods)).encode("ascii"))
            return error_document(
                request,
                405,
                "MethodNotAllowed",
                f"method {request.method.decode('ascii', 'replace')} is not allowed on {path}",
            )
        if error.code == 404:
            return error_document(request, 404, "NotFound", f"no resource at {path}")
        return error_document(request, error.code, type(error).__name__, error.description or error.name)
    request_id = str(uuid.uuid4())
    log.failure(
        "conductor request {request_id} ({method} {uri}) failed",
        failure,
        request_id=request_id,
        method=request.method.decode("ascii", "replace"),
        uri=request.uri.decode("ascii", "replace"),
    )
    return error_document(
        request, 500, "InternalError", f"internal error; the daemon's log has the details (request id {request_id})"
    )
