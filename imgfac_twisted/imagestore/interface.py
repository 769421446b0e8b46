"""What every image store does: keep finished target images where every node can read them.

A stored image has a *location*, kept as its builder's ``artifact_path``:
a file path for a directory store, ``s3://bucket/key`` for an S3 store.
An absolute path that no store made (a builder finished before the image
store existed) is read as the local file it names, by either store.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import Interface

from ..doors import shielded
from ..errors import ImageFactoryError

__all__ = ["S3_SCHEME", "IImageStore", "ImageStoreError", "image_key", "is_s3_location", "put_or_clean_up"]

S3_SCHEME = "s3://"


class ImageStoreError(ImageFactoryError):
    """An image could not be stored or read back (checksum mismatch, missing object, unreachable store)."""


def image_key(builder_id: str, path: str) -> str:
    """The key a target builder's image is stored under: its id, then the file's own name."""
    return f"{builder_id}/{os.path.basename(path)}"


def is_s3_location(location: str) -> bool:
    """True when ``location`` names an object in an S3 bucket, not a file."""
    return location.startswith(S3_SCHEME)


class IImageStore(Interface):
    """Where finished target images are kept and read back (a directory or an S3 bucket)."""

    def describe() -> str:
        """Where the images go, for logs (never a secret)."""

    def put(source: str, key: str, sha256: str, progress: Callable[[int], None] | None = None) -> Deferred[str]:
        """Store the file ``source`` under ``key``; fire with its location once it is stored whole.

        The bytes stored must hash to ``sha256`` (else ImageStoreError and
        nothing is stored); ``source`` is gone afterwards.  ``progress`` is
        called on the reactor with the bytes stored so far.
        """

    def local_path(location: str) -> str | None:
        """A file this node can read the image at directly, or None when it must be fetched."""

    def fetch(location: str, dest_dir: str, sha256: str | None) -> Deferred[str]:
        """Fire with the path of a local file holding the image: the store's own file when it is
        local, else a sparse copy downloaded into ``dest_dir`` (checked against ``sha256`` when given)."""

    def download_url(location: str) -> Deferred[str | None]:
        """Fire with a time-limited URL a client downloads the image from (S3: presigned), or None
        when the image is served from ``local_path``."""

    def delete(location: str) -> Deferred[None]:
        """Remove a stored image (nothing when it is already gone or not the store's)."""


async def put_or_clean_up(store: IImageStore, source: str, key: str, sha256: str) -> str:
    """``store.put(source, key, sha256)``; when the caller is cancelled mid-put (a cancelled builder), the
    put still lands (its thread runs on), and the image it stored is deleted again, not left behind."""
    cancelled: list[bool] = []

    def landed(location: str) -> str:
        if cancelled:
            store.delete(location).addErrback(
                lambda failure: Logger().failure("image {key} of a cancelled builder not removed", failure, key=key)
            )
        return location

    try:
        return await shielded(store.put(source, key, sha256).addCallback(landed))
    except CancelledError:
        cancelled.append(True)
        raise
