"""``GET /imagefactory/builders`` as JSON: every builder (streamed), a page of them, or the unfinished ones.

An installation may hold hundreds of thousands of builders: the full list
is read from the store a page at a time and written one page per turn of
the reactor (a page of ``STREAM_PAGE`` serialises in a few milliseconds),
so other requests are served while it streams.  Additive query arguments:

* ``limit`` (1 to ``MAX_LIMIT``): at most that many builders, oldest first,
  and ``next``, the href of the following page (null on the last page);
* ``marker``: the id of the last builder of the previous page (an id that
  names no builder answers 400);
* ``unfinished=1``: only the builders not yet COMPLETED or FAILED (what a
  status page re-reads every second), oldest first, not paged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twisted.internet.defer import ensureDeferred
from twisted.web.iweb import IRequest

from ..errors import InvalidRequest, UnknownObject
from ..jobs.index import BuilderIndex
from ..model import Builder
from . import representations as shapes
from .errors import json_body

__all__ = ["MAX_LIMIT", "STREAM_PAGE", "ListAsked", "asked", "builders_answer"]

#: The most builders one page may ask for.
MAX_LIMIT = 1000
#: Builders read from the store and written per turn of the reactor when every builder is listed.
STREAM_PAGE = 100


@dataclass(frozen=True)
class ListAsked:
    """What a request for the builder list asked for."""

    limit: int | None = None
    marker: str | None = None
    unfinished: bool = False


def asked(request: IRequest) -> ListAsked:
    """The list's query arguments, checked (InvalidRequest, 400, naming the bad one)."""
    limit_text, marker, unfinished_text = (_argument(request, name) for name in (b"limit", b"marker", b"unfinished"))
    limit = None
    if limit_text is not None:
        limit = int(limit_text) if limit_text.isdigit() else 0
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit_text!r}")
    if marker is not None and not marker:
        raise InvalidRequest("marker must be the id of a builder")
    if unfinished_text not in (None, "0", "1", "false", "true"):
        raise InvalidRequest(f"unfinished must be 1 or 0, not {unfinished_text!r}")
    unfinished = unfinished_text in ("1", "true")
    if unfinished and (limit is not None or marker is not None):
        raise InvalidRequest("unfinished lists every unfinished builder: it takes no limit or marker")
    return ListAsked(limit, marker, unfinished)


def _argument(request: IRequest, name: bytes) -> str | None:
    values = request.args.get(name)
    return None if not values else values[-1].decode("utf-8", "replace")


async def builders_answer(request: IRequest, index: BuilderIndex, base: str, wanted: ListAsked) -> bytes:
    """The JSON answer for ``wanted``: written here in pages when it is the whole list (then b"" is left)."""
    href = base + shapes.PREFIX + "/builders"
    if wanted.unfinished:
        return json_body(request, 200, _document(href, index.unfinished(), base))
    if wanted.limit is None:
        await _stream(request, index, href, base, wanted.marker)
        return b""
    page = await _page(index, wanted.limit + 1, wanted.marker)
    following = None
    if len(page) > wanted.limit:
        page = page[: wanted.limit]
        following = href + "?" + urlencode({"limit": wanted.limit, "marker": page[-1].id})
    return json_body(request, 200, {**_document(href, page, base), "next": following})


def _document(href: str, builders: list[Builder], base: str) -> dict[str, Any]:
    return {"_type": "builders", "href": href, "builders": [_builder(builder, base) for builder in builders]}


def _builder(builder: Builder, base: str) -> dict[str, Any]:
    return shapes.builder_document(builder, "builder", base + shapes.builder_path(builder.id))


async def _page(index: BuilderIndex, limit: int, marker: str | None) -> list[Builder]:
    try:
        return await index.page(limit, marker)
    except UnknownObject:
        raise InvalidRequest(f"marker {marker!r} names no builder") from None


async def _stream(request: IRequest, index: BuilderIndex, href: str, base: str, marker: str | None) -> None:
    """Write the whole list, the same bytes ``json_body`` would make, a store page per turn of the reactor.

    The next page is read (on the store's door) while this one is serialised.
    """
    page = await _page(index, STREAM_PAGE, marker)
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/json")
    request.write(json.dumps({"_type": "builders", "href": href})[:-1].encode("utf-8") + b', "builders": [')
    separator = b""
    full = len(page) == STREAM_PAGE
    while page:
        following = ensureDeferred(_after(index, page)) if full else None
        request.write(separator + ", ".join(json.dumps(_builder(b, base)) for b in page).encode("utf-8"))
        separator = b", "
        page, full = await following if following is not None else ([], False)
    request.write(b"]}")


async def _after(index: BuilderIndex, page: list[Builder]) -> tuple[list[Builder], bool]:
    """The store page after ``page`` and whether it is full; after the last of ``page`` still there
    when builders at its end were deleted meanwhile."""
    written = {builder.id for builder in page}
    for builder in reversed(page):
        try:
            following = await index.page(STREAM_PAGE, builder.id)
        except UnknownObject:
            continue
        return [b for b in following if b.id not in written], len(following) == STREAM_PAGE
    return [], False
