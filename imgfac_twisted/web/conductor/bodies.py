"""Reading a Conductor request's XML body: the hardened parser, its root, the text of its fields."""

from __future__ import annotations

from lxml import etree
from twisted.web.iweb import IRequest

from ...errors import InvalidRequest
from ...xmlsafe import parse_xml
from ..errors import UnsupportedMediaType
from ..params import media_type
from .errors import incorrect, insufficient

XML_TYPES = (b"application/xml", b"text/xml")


def read_body(request: IRequest, root_tag: str, max_bytes: int) -> etree._Element:
    """The request's XML body, parsed with the hardened parser, its root checked to be ``<root_tag>``."""
    request.content.seek(0)
    body = request.content.read()
    kind = media_type(request)
    if kind and kind not in XML_TYPES:
        raise UnsupportedMediaType(
            f"request body of type {kind.decode('ascii', 'replace')} is not supported: send application/xml"
        )
    if not body.strip():
        raise insufficient(f"the request needs an XML body: <{root_tag}>...</{root_tag}>")
    root = parse_xml(body, max_bytes=max_bytes, what="request body", error=InvalidRequest)
    if root.tag != root_tag:
        raise incorrect(f"the request body must be a <{root_tag}> document, not <{root.tag}>")
    return root


def text(root: etree._Element, name: str) -> str:
    """The text of ``<name>`` under ``root`` (a child element is taken as XML text), stripped; '' when absent."""
    element = root.find(name)
    if element is None:
        return ""
    children = list(element)
    if children:
        return etree.tostring(children[0], encoding="unicode").strip()
    return (element.text or "").strip()


def names(text: str) -> list[str]:
    """The distinct names of a comma-separated list."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
