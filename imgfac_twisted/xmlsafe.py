"""The project's one hardened XML parser.

Everything that turns untrusted text into an XML tree -- TDL templates,
provider credentials, Conductor XML -- goes through :func:`parse_xml`, so the
defences against XML attacks live in exactly one place:

* the input size is capped *before* any parsing happens;
* documents carrying a DOCTYPE (and therefore any DTD, internal or external)
  are refused outright, both by a byte scan before parsing and by inspecting
  the parsed document, so neither XXE (external entities reading local files
  or reaching the network) nor entity expansion bombs ("billion laughs") can
  happen;
* the libxml2 parser itself is configured never to resolve entities, never to
  touch the network, never to load a DTD, and to keep the "huge tree" limits;
* comments and processing instructions are dropped.

A fresh :class:`lxml.etree.XMLParser` is built for every call.  lxml parsers
are reusable but must not be used by two threads at once; building one costs
about a microsecond (measured: ~0.9 us to create vs ~1.7 us to parse a tiny
document), so a per-call parser is cheap and makes :func:`parse_xml` safe to
call from any thread (e.g. ``deferToThread``) without further thought.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

__all__ = ["parse_xml"]

#: Options of every parser built by this module.  Not to be loosened.
#: Keyword arguments of etree.XMLParser.
PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}

# Markup that introduces a DTD or an entity declaration.  XML is case
# sensitive, so lower-case spellings are not a DOCTYPE (libxml2 rejects them
# as a syntax error).  Both are looked for in every encoding libxml2 could
# auto-detect, so a UTF-16 or UTF-32 document cannot slip past the scan.
_FORBIDDEN_MARKUP = ("<!DOCTYPE", "<!ENTITY")
_SCAN_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
_FORBIDDEN_BYTES = tuple(markup.encode(encoding) for markup in _FORBIDDEN_MARKUP for encoding in _SCAN_ENCODINGS)


def _new_parser(encoding: str | None = None) -> etree.XMLParser:
    """A fresh hardened parser (see the module docstring for why per call)."""
    return etree.XMLParser(encoding=encoding, **PARSER_OPTIONS)


def _syntax_message(exc: etree.XMLSyntaxError) -> str:
    """lxml's message with its position, without the ``(<string>, ...)`` tail."""
    message = (exc.msg or str(exc) or "syntax error").strip()
    if ", line " not in message and exc.position:
        line, column = exc.position
        message = f"{message}, line {line}, column {column}"
    return message


def parse_xml(
    data: str | bytes,
    *,
    max_bytes: int,
    what: str,
    error: type[Exception] = ValueError,
) -> etree._Element:
    """Parse untrusted ``data`` and return the root element.

    ``what`` names the document in messages (e.g. ``"template"``); every
    refusal raises ``error(message)``.  Refused: input over ``max_bytes``
    bytes (UTF-8 bytes for a ``str``), empty input, any DOCTYPE or entity
    declaration, and anything not well-formed.

    A ``str`` is encoded to UTF-8 and parsed as UTF-8 whatever encoding its
    XML declaration claims (a ``str`` has no encoding left to honour); for
    ``bytes`` the declaration or byte-order mark is honoured as usual.
    """
    if isinstance(data, str):
        # A UTF-8 encoding is at least as long as the text: refuse a huge str
        # without allocating its encoding.
        if len(data) > max_bytes:
            raise error(_too_large(what, max_bytes))
        if any(markup in data for markup in _FORBIDDEN_MARKUP):
            raise error(_doctype_refused(what))
        raw = data.encode("utf-8")
        parser = _new_parser("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        parser = _new_parser()
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")

    if len(raw) > max_bytes:
        raise error(_too_large(what, max_bytes))
    if not raw.strip():
        raise error(f"{what} is empty")
    if any(markup in raw for markup in _FORBIDDEN_BYTES):
        raise error(_doctype_refused(what))

    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise error(f"{what} is not well-formed XML: {_syntax_message(exc)}") from None

    # Second line of defence: whatever the scan above may have missed (an
    # encoding it does not know), a parsed DTD is still refused.
    # Any: lxml-stubs' DocInfo lacks ``doctype``.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise error(_doctype_refused(what))
    return root


def _too_large(what: str, max_bytes: int) -> str:
    return f"{what} is larger than the limit of {max_bytes} bytes"


def _doctype_refused(what: str) -> str:
    return f"{what} must not contain a DOCTYPE or entity declarations"
