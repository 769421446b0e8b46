"""The factory's hot read path: builder reads answered without Klein's routing.

Clients poll builder status many times a second; ``FactoryRoot`` matches
the few read shapes of ``READ_SHAPES`` by path segment and calls the very
``FactoryAPI`` methods Klein would, and hands everything else to Klein.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ..errors import UnknownObject
from .errors import error_body, render_failure
from .factory import FactoryAPI
from .site import body_cap_exceeded

__all__ = ["READ_SHAPES", "FactoryRoot"]

#: The reads ``FactoryRoot`` answers without Klein: (segment count, fixed
#: segments by position, FactoryAPI method, positions of the arguments).
READ_SHAPES: tuple[tuple[int, dict[int, str], str, tuple[int, ...]], ...] = (
    (3, {1: "builders"}, "builder", (2,)),
    (4, {1: "builders", 3: "status"}, "builder_status", (2,)),
    (7, {1: "images", 3: "builds", 5: "target_images"}, "target_image", (2, 4, 6)),
    (8, {1: "images", 3: "builds", 5: "target_images", 7: "status"}, "target_image_status", (2, 4, 6)),
    (9, {1: "images", 3: "builds", 5: "target_images", 7: "provider_images"}, "provider_image", (2, 4, 6, 8)),
    (
        10,
        {1: "images", 3: "builds", 5: "target_images", 7: "provider_images", 9: "status"},
        "provider_image_status",
        (2, 4, 6, 8),
    ),
)


class FactoryRoot(Resource):
    """The site's root: builder reads straight from the index, everything else through Klein.

    Clients poll builder status many times a second; Klein's per-request
    routing roughly halves what twisted.web can serve, so the handful of
    read shapes in READ_SHAPES are matched here by segment and handed to the
    very methods Klein would call.  Klein still owns those routes too (for
    405s and for anything that does not match exactly).
    """

    isLeaf = True

    def __init__(self, api: FactoryAPI, fallback: Resource) -> None:
        super().__init__()
        self._api = api
        self._fallback = fallback
        self._shapes: dict[int, list[tuple[dict[int, bytes], Callable[..., Any], tuple[int, ...]]]] = {}
        for count, fixed, method, positions in READ_SHAPES:
            encoded = {index: value.encode("ascii") for index, value in fixed.items()}
            self._shapes.setdefault(count, []).append((encoded, getattr(api, method), positions))

    def render(self, request: IRequest) -> Any:
        cap = body_cap_exceeded(request)
        if cap is not None:
            return error_body(request, 413, f"request body is larger than {cap} bytes")
        if request.method in (b"GET", b"HEAD"):
            answer = self._fast_read(request)
            if answer is not None:
                return answer
        return self._fallback.render(request)

    def _fast_read(self, request: IRequest) -> object:
        segments = request.postpath
        if not segments or segments[0] != b"imagefactory":
            return None
        for fixed, method, positions in self._shapes.get(len(segments), ()):
            if all(segments[index] == value for index, value in fixed.items()):
                try:
                    arguments = [segments[index].decode("utf-8") for index in positions]
                except UnicodeDecodeError:
                    # No id is anything but UTF-8 text: nothing is there.
                    return render_failure(request, Failure(UnknownObject("no resource at this path")))
                try:
                    answer = method(request, *arguments)
                except Exception:
                    return render_failure(request, Failure())
                return answer if isinstance(answer, bytes) else _later(request, answer)
        return None


def _later(request: IRequest, answer: Deferred[bytes]) -> object:
    """Finish ``request`` once ``answer`` (a read the index missed, from the store) fires."""
    gone: list[bool] = []
    # A client gone before the store answered is not written to.
    request.notifyFinish().addErrback(lambda _: gone.append(True))  # type: ignore[attr-defined]

    def finish(body: bytes) -> None:
        if not gone:
            request.write(body)
            request.finish()

    answer.addErrback(lambda failure: render_failure(request, failure)).addCallback(finish)
    return NOT_DONE_YET
