"""What the routes of both APIs (factory JSON, Conductor XML) answer with besides documents.

The base URL the client addressed this daemon by (every ``href`` starts with
it) and an image file served for download exactly as it is on disk, or, from
an S3 image store, a redirect to a presigned URL of its object.
"""

from __future__ import annotations

import os

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.web import http, static
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from ..imagestore import IImageStore

__all__ = ["base_url", "download", "stored_download"]


def base_url(request: IRequest) -> str:
    """``scheme://host[:port]`` as the client addressed this daemon."""
    host: bytes | None = request.getHeader(b"host")
    if host is None:
        address = request.getHost()
        host = f"{address.host}:{address.port}".encode("ascii")
    return ("https://" if request.isSecure() else "http://") + host.decode("ascii", "replace")


def download(request: IRequest, path: str, sha256: str | None) -> Resource | bytes:
    """A resource serving the file at ``path`` exactly as it is on disk.

    Its SHA-256, recorded when the image was made, is the strong ETag: a
    client that already holds this image (``If-None-Match``) gets 304.
    """
    if sha256 is not None and request.setETag(f'"{sha256}"'.encode("ascii")) == http.CACHED:
        return b""
    served = static.File(path, defaultType="application/octet-stream")
    # static.File would label a .tar.gz "Content-Encoding: gzip" and clients
    # would unpack it on the fly: the image must arrive as made.
    served.contentTypes = {}
    served.contentEncodings = {}
    filename = os.path.basename(path).encode("ascii", "replace")
    request.setHeader(b"content-disposition", b'attachment; filename="' + filename + b'"')
    return served


def stored_download(
    request: IRequest, location: str, sha256: str | None, store: IImageStore
) -> Deferred[Resource | bytes]:
    """The image at ``location`` in ``store``: served from its file, or a 302 to the store's presigned URL.

    ``If-None-Match`` with the image's SHA-256 answers 304 either way.
    """

    async def answer() -> Resource | bytes:
        if sha256 is not None and request.setETag(f'"{sha256}"'.encode("ascii")) == http.CACHED:
            return b""
        url = await store.download_url(location)
        if url is None:
            return download(request, store.local_path(location) or location, None)
        request.redirect(url.encode("ascii"))
        return b""

    return ensureDeferred(answer())
