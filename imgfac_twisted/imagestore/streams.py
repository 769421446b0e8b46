"""Streams that hash what goes through them, for uploads and downloads of images.

Both declare themselves not seekable, so s3transfer reads (and writes) them
strictly in order, once: the hash is then the hash of the object's bytes.
"""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

__all__ = ["HashingReader", "SparseHashingWriter"]


class HashingReader:
    """Reads a stream in order, hashing every byte read (SHA-256)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        """The next ``size`` bytes (all the rest when negative)."""
        data = self._stream.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """False: so the upload reads each byte once, in order."""
        return False

    def hexdigest(self) -> str:
        """SHA-256 of what was read so far."""
        return self._digest.hexdigest()


class SparseHashingWriter:
    """Writes a download in order to a file descriptor, leaving runs of zeros as holes; hashes every byte."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        """Hash ``data``; write it unless it is all zeros (a hole is left instead)."""
        self._digest.update(data)
        if data.count(0) != len(data):
            os.pwrite(self._fd, data, self.size)
        self.size += len(data)
        return len(data)

    def writable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """False: so the download writes in order."""
        return False

    def finish(self) -> None:
        """Give the file its whole length (a trailing hole is not written)."""
        os.ftruncate(self._fd, self.size)

    def hexdigest(self) -> str:
        """SHA-256 of what was written so far."""
        return self._digest.hexdigest()
