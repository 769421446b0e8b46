"""Reading a write request's parameters: JSON object, form-encoded or multipart body, and the query.

A JSON body may come wrapped as ActiveResource (Conductor's factory client)
sends it, ``{"image": {"targets": ..., "template": ...}}``: an object with
exactly one key whose value is an object stands for that inner object, as
the 2011 factory read it.

twisted.web parses form bodies of POST requests only, and answers a
malformed multipart body with a bare 400 before the API sees it; the API
needs PUT bodies too and JSON errors always, so it reads every body itself
(see ``CappedRequest``, which keeps twisted.web's hands off multipart).
"""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from lxml import etree
from twisted.web.iweb import IRequest

from ..errors import InvalidRequest
from ..providers import MAX_CREDENTIALS_BYTES
from ..xmlsafe import parse_xml
from .errors import UnsupportedMediaType

FORM = b"application/x-www-form-urlencoded"
MULTIPART = b"multipart/form-data"
JSON = b"application/json"


def media_type(request: IRequest) -> bytes:
    """The request's content type without parameters, lower case."""
    return (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()


def read_params(request: IRequest) -> dict[str, str]:
    """Query arguments, then the body's parameters (which win), as text."""
    request.content.seek(0)
    body = request.content.read()
    _, _, query = request.uri.partition(b"?")
    params = _form_pairs(query, "query string")
    kind = media_type(request)
    if kind == JSON:
        params.update(_json_object(body))
    elif kind == FORM:
        params.update(_form_pairs(body, "form body"))
    elif kind == MULTIPART:
        params.update(_multipart_fields(request.getHeader(b"content-type") or b"", body))
    elif body:
        raise UnsupportedMediaType(
            f"request body of type {kind.decode('ascii', 'replace') or 'unknown'} is not supported: "
            "send application/x-www-form-urlencoded, multipart/form-data or application/json"
        )
    return params


def _text(value: str, where: str) -> str:
    # Lone surrogates (JSON "\ud800") are not text any store or parser takes.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{where} holds text that is not valid Unicode") from None
    return value


def _form_pairs(data: bytes, where: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(data.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeError:
        raise InvalidRequest(f"{where} must be percent-encoded UTF-8") from None
    return dict(pairs)


def _json_object(body: bytes) -> dict[str, str]:
    try:
        document = json.loads(body or b"{}")
    except ValueError as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidRequest("request body must be a JSON object")
    document = unwrapped(document)
    wrong = sorted(name for name, value in document.items() if not isinstance(value, str))
    if wrong:
        raise InvalidRequest(f"parameters must be strings: {', '.join(wrong)}")
    return {
        _text(name, "request body"): _text(value, "request body")
        for name, value in document.items()
        if isinstance(value, str)
    }


def unwrapped(document: dict[str, object]) -> dict[str, object]:
    """The inner object of ActiveResource's wrapping (``{"image": {...}}``); any other object as it is."""
    if len(document) == 1:
        (inner,) = document.values()
        if isinstance(inner, dict):
            return inner
    return document


def provider_credentials(text: str) -> str:
    """The ``<provider_credentials>`` document, found anywhere in ``text``, as XML text.

    Conductor sends its whole provider account (``<provider_account><name/>
    ...<provider_credentials>...</provider_credentials></provider_account>``)
    where the factory spec has the bare ``<provider_credentials>`` document.
    Text that is not XML, or holds no such element, is returned as it is:
    the provider's own parser then says what is wrong with it.  Nothing of
    the credentials is logged or echoed here.
    """
    try:
        root = parse_xml(text, max_bytes=MAX_CREDENTIALS_BYTES, what="credentials", error=InvalidRequest)
    except InvalidRequest:
        return text
    if root.tag == "provider_credentials":
        return text
    found = next(root.iter("provider_credentials"), None)
    if found is None:
        return text
    return etree.tostring(found, encoding="unicode", with_tail=False)


def _multipart_fields(content_type: bytes, body: bytes) -> dict[str, str]:
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise InvalidRequest("multipart body cannot be parsed (is the boundary right?)")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise InvalidRequest("every multipart part needs a Content-Disposition name")
        try:
            payload = part.get_payload(decode=True)
            fields[str(name)] = payload.decode("utf-8") if isinstance(payload, bytes) else ""
        except UnicodeDecodeError:
            raise InvalidRequest(f"multipart field {name!r} is not UTF-8 text") from None
    return fields


def required(params: dict[str, str], *names: str) -> list[str]:
    """The values of ``names``; InvalidRequest naming every one missing or empty."""
    missing = [name for name in names if not params.get(name, "").strip()]
    if missing:
        raise InvalidRequest(f"missing parameter{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return [params[name].strip() for name in names]
