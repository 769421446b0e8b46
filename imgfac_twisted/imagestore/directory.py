"""The directory image store: one folder per target image under a root (local disk, or a shared mount such as NFS).

An image is moved in under a temporary name and renamed into place, so a
reader never sees half of one.  On the same file system the move is a
rename (the bytes the builder hashed are the bytes stored); across file
systems it is a sparse copy hashed as it is written, checked against the
builder's SHA-256 before the rename.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from ..doors import IDoor
from ..targets.sparse import copy_hashed
from .interface import IImageStore, ImageStoreError, is_s3_location

__all__ = ["DirectoryImageStore"]


@implementer(IImageStore)
class DirectoryImageStore:
    """Images kept as files under ``root``; blocking file work runs on ``door``."""

    def __init__(self, root: str, door: IDoor) -> None:
        self.root = os.path.abspath(root)
        self._door = door

    def describe(self) -> str:
        """``directory <root>``."""
        return f"directory {self.root}"

    def put(self, source: str, key: str, sha256: str, progress: Callable[[int], None] | None = None) -> Deferred[str]:
        """Move ``source`` to ``<root>/<key>`` (atomically); fire with that path."""
        return self._door.run(self.thd_put, source, key, sha256)

    def thd_put(self, source: str, key: str, sha256: str) -> str:
        """``put``, blocking (run it on a door)."""
        destination = self._path_of(key)
        folder = os.path.dirname(destination)
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.path.basename(destination)}.{uuid.uuid4().hex}.part")
        try:
            os.rename(source, temporary)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise ImageStoreError(f"the image cannot be moved into {folder}: {error.strerror}") from None
            self._copy_in(source, temporary, sha256)
        os.rename(temporary, destination)
        _sync_folder(folder)
        return destination

    def _copy_in(self, source: str, temporary: str, sha256: str) -> None:
        """Copy ``source`` (another file system) to ``temporary``, sparse, checked; remove ``source`` after."""
        try:
            copied = copy_hashed(source, temporary, lambda _: None, threading.Event())
            if copied.sha256 != sha256:
                raise ImageStoreError(
                    f"the image copied into the store hashes to {copied.sha256}, not {sha256}: not stored"
                )
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
        except BaseException:
            _remove(temporary)
            raise
        _remove(source)

    def local_path(self, location: str) -> str | None:
        """The location itself: every image of this store is a file here."""
        return None if is_s3_location(location) else location

    def fetch(self, location: str, dest_dir: str, sha256: str | None) -> Deferred[str]:
        """The stored file itself (nothing is copied)."""
        path = self.local_path(location)
        if path is None:
            return fail(ImageStoreError(f"{location} is in S3, but this node's image_store is {self.describe()}"))
        return succeed(path)

    def download_url(self, location: str) -> Deferred[str | None]:
        """None: the file is served from disk."""
        return succeed(None)

    def delete(self, location: str) -> Deferred[None]:
        """Remove the image's file and its folder, when it is inside the root."""
        return self._door.run(self.thd_delete, location)

    def thd_delete(self, location: str) -> None:
        """``delete``, blocking."""
        path = os.path.abspath(location)
        if os.path.dirname(os.path.dirname(path)) != self.root:
            return  # not one of ours (a path from before the image store): its builder's folder holds it
        _remove(path)
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass  # not empty or already gone

    def _path_of(self, key: str) -> str:
        """``<root>/<key>``; a key that would leave the root is refused."""
        path = os.path.abspath(os.path.join(self.root, key))
        if os.path.dirname(os.path.dirname(path)) != self.root:
            raise ImageStoreError(f"image key {key!r} is not <builder id>/<file name>")
        return path


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (a crash after put must not lose the image's name)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
