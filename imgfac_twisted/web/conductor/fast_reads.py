"""The Conductor reads pollers hit hardest, answered from the index without Klein's routing.

The Conductor UI polled a target or provider image every 30 s per user;
Klein's routing costs about as much as the answer, and lxml would build
the same bytes each time.  ``ConductorReads`` answers those two reads from
the index with the serialized document kept per object, and remembers the
template each build was made from (builds never change) for the routes too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lxml import etree
from twisted.web.iweb import IRequest

from ...jobs.index import BuilderIndex
from ...model import Builder, Operation
from ...store import IStore
from ..responses import base_url
from . import lookups
from . import representations as xml
from .errors import XML_CONTENT_TYPE, xml_document

__all__ = ["MAX_SERIALIZED", "ConductorReads", "provider_contents", "pushes_of"]

#: Serialized documents kept for the hot reads (one per object polled; dropped all at once beyond this).
MAX_SERIALIZED = 4096


def pushes_of(target_image_id: str, builders: Iterable[Builder]) -> list[str]:
    """The ids of the provider images pushed from target image ``target_image_id``."""
    return [b.id for b in builders if b.operation == Operation.PUSH and b.target_image_id == target_image_id]


async def provider_contents(index: BuilderIndex, under: Callable[[Builder], bool]) -> list[tuple[str, str]]:
    """(provider, identifier there) of every provider image ``under`` an object (read before it is deleted)."""
    pushes = await index.scan(lambda b: b.operation == Operation.PUSH and under(b))
    return [(b.provider or "", b.identifier_on_provider) for b in pushes if b.identifier_on_provider]


class ConductorReads:
    """Target and provider images by id from the index and cached bytes; the builds' template ids."""

    def __init__(self, store: IStore, index: BuilderIndex) -> None:
        self._store = store
        self._index = index
        #: Build id -> id of the template it was made from.  Builds never change, so a target
        #: image's read needs the store once per build, not once per request (pollers).
        self._build_templates: dict[str, str] = {}
        #: Object id -> (what its document was made from, the serialized document): pollers read
        #: the same unchanged builder again and again; lxml would rebuild the same bytes each time.
        self._serialized: dict[str, tuple[tuple[Any, ...], bytes]] = {}
        #: Target image id -> (the index's ``pushes_version`` then, its provider images' ids): read from
        #: the store once, and again only when a provider image may have come or gone.
        self._pushes: dict[str, tuple[tuple[int, int], list[str]]] = {}

    async def pushes_of(self, target_image_id: str) -> list[str]:
        """The ids of the provider images pushed from target image ``target_image_id``, oldest first."""
        held = self._held_pushes(target_image_id)
        if held is not None:
            return held
        version = self._index.pushes_version(target_image_id)
        # Pushes are made after their target image: the store is read from there on.
        found = await self._index.scan(lambda b: b.target_image_id == target_image_id, after=target_image_id)
        pushes = pushes_of(target_image_id, found)
        if len(self._pushes) >= MAX_SERIALIZED:
            self._pushes.clear()
        self._pushes[target_image_id] = (version, pushes)
        return pushes

    def _held_pushes(self, target_image_id: str) -> list[str] | None:
        held = self._pushes.get(target_image_id)
        if held is None or held[0] != self._index.pushes_version(target_image_id):
            return None
        return held[1]

    async def template_of(self, build_id: str) -> str:
        """The id of the template the build was made from (remembered: builds never change)."""
        template_id = self._build_templates.get(build_id)
        if template_id is None:
            template_id = self._build_templates[build_id] = (await lookups.build(self._store, build_id)).template_id
        return template_id

    def fast_read(self, request: IRequest) -> bytes | None:
        """A target or provider image by id, answered from the index without Klein's routing; None otherwise.

        The Conductor UI polled these every 30 s per user; Klein's routing
        costs about as much as the answer.  Anything not answered here
        (unknown ids, a build whose template is not remembered yet, other
        paths) goes through Klein as before, with the same result.
        """
        segments = request.postpath
        if len(segments) != 4 or segments[1] != b"api" or segments[2] not in (b"target_images", b"provider_images"):
            return None
        try:
            object_id = segments[3].decode("utf-8")
        except UnicodeDecodeError:
            return None
        builder = self._index.get(object_id)
        if builder is None:
            return None
        base = base_url(request)
        if segments[2] == b"provider_images":
            if builder.operation != Operation.PUSH:
                return None
            return self._serialized_answer(request, (builder, base), lambda: xml.provider_image_element(base, builder))
        template_id = self._build_templates.get(builder.build_id)
        pushes = self._held_pushes(builder.id)
        if builder.operation != Operation.BUILD or template_id is None or pushes is None:
            return None
        return self._serialized_answer(
            request,
            (builder, base, template_id, *pushes),
            lambda: xml.target_image_element(base, builder, template_id, pushes),
        )

    def _serialized_answer(
        self, request: IRequest, made_from: tuple[Any, ...], element: Callable[[], etree._Element]
    ) -> bytes:
        """The 200 XML answer of ``element()``, serialized again only when what it is made from changed.

        ``made_from`` starts with the builder: the index holds a new
        (immutable) Builder after every change, so identity says "unchanged".
        """
        builder = made_from[0]
        cached = self._serialized.get(builder.id)
        if cached is None or cached[0][0] is not builder or cached[0][1:] != made_from[1:]:
            if len(self._serialized) >= MAX_SERIALIZED:
                self._serialized.clear()
            cached = self._serialized[builder.id] = (made_from, xml_document(request, 200, element()))
        request.setResponseCode(200)
        request.setHeader(b"content-type", XML_CONTENT_TYPE)
        return cached[1]
