"""Sparse copies of raw disks, hashed while they are written.

A base image is mostly holes: a 10 GiB disk may hold a few hundred MiB of
data.  :func:`copy_hashed` copies only the data extents (found with
``SEEK_DATA``/``SEEK_HOLE``), leaves the holes as holes, and feeds every byte
of the disk, holes as zeros, to SHA-256 on the way, so the image's checksum
is known the moment it is written: nobody reads a 10 GiB file again for it.

It blocks: run it on a door.  ``stop`` (a ``threading.Event``) ends it early.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator

from ..errors import ImageFactoryError
from . import Artifact

CHUNK = 1024 * 1024
_ZEROS = bytes(CHUNK)


class CopyStopped(ImageFactoryError):
    """The copy was asked to stop before it ended."""


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each run of data in the file, in order; holes are skipped.

    A file system without ``SEEK_DATA`` gives the whole file as one run.
    """
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole is left
                return
            if error.errno == errno.EINVAL:  # no SEEK_DATA here
                yield position, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def copy_hashed(source: str, destination: str, progress: Callable[[float], None], stop: threading.Event) -> Artifact:
    """Copy ``source`` to a new sparse ``destination``; its Artifact, hashed as written.

    ``progress`` gets the percentage of the disk gone through (holes count).
    """
    size = os.path.getsize(source)
    digest = hashlib.sha256()
    reporter = _Percent(size, progress)
    with open(source, "rb") as reading, open(destination, "wb") as writing:
        writing.truncate(size)
        done = 0
        for start, end in data_extents(reading.fileno(), size):
            _hash_zeros(digest, start - done, stop)
            reporter.reached(start)
            _copy_range(reading.fileno(), writing.fileno(), start, end, digest, stop, reporter)
            done = end
        _hash_zeros(digest, size - done, stop)
        reporter.reached(size)
    return Artifact(path=destination, size=size, sha256=digest.hexdigest())


def _copy_range(
    reading: int,
    writing: int,
    start: int,
    end: int,
    digest: hashlib._Hash,
    stop: threading.Event,
    reporter: _Percent,
) -> None:
    """Copy ``start..end``, hashing it; all-zero chunks are hashed but left as holes."""
    position = start
    while position < end:
        _check(stop)
        chunk = os.pread(reading, min(CHUNK, end - position), position)
        if not chunk:
            raise ImageFactoryError(f"the disk ended at {position} bytes while being copied")
        digest.update(chunk)
        if chunk != _ZEROS[: len(chunk)]:
            os.pwrite(writing, chunk, position)
        position += len(chunk)
        reporter.reached(position)


def _hash_zeros(digest: hashlib._Hash, length: int, stop: threading.Event) -> None:
    while length > 0:
        _check(stop)
        piece = min(CHUNK, length)
        digest.update(_ZEROS[:piece] if piece < CHUNK else _ZEROS)
        length -= piece


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise CopyStopped("the copy was stopped")


class _Percent:
    """Calls ``progress`` once per whole percent reached, not per chunk."""

    def __init__(self, size: int, progress: Callable[[float], None]) -> None:
        self._size = max(size, 1)
        self._progress = progress
        self._last = -1

    def reached(self, position: int) -> None:
        percent = position * 100 // self._size
        if percent > self._last:
            self._last = percent
            self._progress(float(percent))
