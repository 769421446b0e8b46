"""The one place where errors become HTTP responses for the factory API.

Domain exceptions know nothing of HTTP; this table gives each its status
code.  Every error body is JSON of one shape, never an HTML page, and an
unexpected error is logged with a request id and answered without internals.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..errors import (
    AuthenticationFailed,
    ImageFactoryError,
    InvalidRequest,
    PayloadTooLarge,
    UnknownObject,
)

log = Logger()


class UnsupportedMediaType(ImageFactoryError):
    """A request body of a type the API does not read."""


class Conflict(ImageFactoryError):
    """The request does not fit the object's current state."""


_STATUS_CODES: tuple[tuple[type[ImageFactoryError], int], ...] = (
    (InvalidRequest, 400),
    (AuthenticationFailed, 401),
    (UnknownObject, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
)


def json_body(request: IRequest, code: int, document: Any) -> bytes:
    """Set the status and JSON content type; return the encoded document."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(document).encode("utf-8")


def error_body(request: IRequest, code: int, message: str) -> bytes:
    """The JSON error document: ``{"_type": "error", "code": ..., "message": ...}``."""
    return json_body(request, code, {"_type": "error", "code": code, "message": message})


def render_failure(request: IRequest, failure: Failure) -> bytes:
    """Answer ``request`` for ``failure``, whatever it is."""
    error = failure.value
    if isinstance(error, ImageFactoryError):
        for kind, code in _STATUS_CODES:
            if isinstance(error, kind):
                if code == 401:
                    request.setHeader(b"www-authenticate", b'OAuth realm="imagefactory"')
                return error_body(request, code, error.message)
    if isinstance(error, HTTPException) and error.code is not None and error.code < 500:
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"allow", ", ".join(sorted(error.valid_methods)).encode("ascii"))
        return error_body(request, error.code, _routing_message(request, error))
    request_id = str(uuid.uuid4())
    log.failure(
        "request {request_id} ({method} {uri}) failed",
        failure,
        request_id=request_id,
        method=request.method.decode("ascii", "replace"),
        uri=request.uri.decode("ascii", "replace"),
    )
    return error_body(request, 500, f"internal error; the daemon's log has the details (request id {request_id})")


def _routing_message(request: IRequest, error: HTTPException) -> str:
    path = request.path.decode("utf-8", "replace")
    if isinstance(error, MethodNotAllowed):
        return f"method {request.method.decode('ascii', 'replace')} is not allowed on {path}"
    if error.code == 404:
        return f"no resource at {path}"
    return error.description or error.name
