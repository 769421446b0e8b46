"""Reading a raw image as EBS snapshot blocks: only the blocks that hold data, in bounded memory.

The reader is blocking (plain file I/O); the push calls it on the cloud door,
one batch at a time.  A batch holds at most about ``max_batch_bytes`` of
block data however large the image is, and each call reads at most
``max_scan_bytes`` of the file, so a call stays short.  Holes of a sparse
file are skipped without reading them (``SEEK_DATA``); blocks of zeros that
were written are read and skipped too: a new EBS snapshot reads as zeros
wherever no block was put.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from dataclasses import dataclass

#: The piece read at once (whole blocks; at least one block).
PIECE_BYTES = 1024 * 1024
DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
DEFAULT_MAX_SCAN_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Block:
    """One block of the image that holds data, ready to put."""

    index: int
    data: bytes = b""
    #: Base64 of the SHA-256 of ``data``, as PutSnapshotBlock wants it.
    checksum: str = ""

    def __repr__(self) -> str:
        return f"Block(index={self.index}, {len(self.data)} bytes)"


def block_checksum(data: bytes) -> str:
    """The base64-encoded SHA-256 of ``data`` (the ``Checksum`` of PutSnapshotBlock, algorithm SHA256)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def volume_size_gib(size_bytes: int) -> int:
    """The smallest whole number of GiB that holds ``size_bytes`` (at least 1)."""
    gib = 1024**3
    return max(1, -(-size_bytes // gib))


class BlockReader:
    """Yields the non-zero blocks of a file in batches, in increasing block order.

    Blocking: call ``open``, ``next_batch`` and ``close`` off the reactor, one
    call at a time.  ``position`` is the offset up to which the file was
    read (every block before it was returned or skipped).
    """

    def __init__(
        self,
        path: str,
        block_size: int,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_scan_bytes: int = DEFAULT_MAX_SCAN_BYTES,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block size must be positive, not {block_size}")
        self.path = path
        self.block_size = block_size
        self.max_batch_bytes = max(block_size, max_batch_bytes)
        self.piece_bytes = max(block_size, PIECE_BYTES // block_size * block_size)
        self.max_scan_bytes = max(self.piece_bytes, max_scan_bytes)
        self.size = 0
        self.position = 0
        #: Blocks returned, and all-zero blocks read and skipped (holes are not counted).
        self.data_blocks = 0
        self.zero_blocks = 0
        self._fd: int | None = None
        self._seek_data = hasattr(os, "SEEK_DATA")
        self._zero_piece = bytes(self.piece_bytes)
        self._zero_block = bytes(block_size)

    def open(self) -> int:
        """Open the file; return its size in bytes."""
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size
        return self.size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def exhausted(self) -> bool:
        return self.position >= self.size

    def next_batch(self) -> list[Block]:
        """The next non-zero blocks (possibly none, when only zeros were scanned); [] at the end."""
        assert self._fd is not None, "open() first"
        blocks: list[Block] = []
        scanned = 0
        while (
            self.position < self.size
            and len(blocks) * self.block_size < self.max_batch_bytes
            and scanned < self.max_scan_bytes
        ):
            self.position = self._next_data(self.position)
            if self.position >= self.size:
                break
            length = min(self.piece_bytes, self.size - self.position)
            piece = os.pread(self._fd, length, self.position)
            if not piece:  # the file shrank under us
                self.size = self.position
                break
            scanned += len(piece)
            if piece != self._zero_piece[: len(piece)]:
                blocks.extend(self._blocks_of(piece, self.position // self.block_size))
            else:
                self.zero_blocks += -(-len(piece) // self.block_size)
            self.position += len(piece)
        self.data_blocks += len(blocks)
        return blocks

    def _blocks_of(self, piece: bytes, first_index: int) -> list[Block]:
        found = []
        size = self.block_size
        for start in range(0, len(piece), size):
            data = piece[start : start + size]
            if len(data) < size:
                # The image's last block is short: a snapshot block is whole.
                data = data + bytes(size - len(data))
            if data == self._zero_block:
                self.zero_blocks += 1
                continue
            found.append(Block(index=first_index + start // size, data=data, checksum=block_checksum(data)))
        return found

    def _next_data(self, offset: int) -> int:
        """The block-aligned offset of the next data at or after ``offset`` (skipping holes)."""
        if not self._seek_data:
            return offset
        try:
            data = os.lseek(self._fd, offset, os.SEEK_DATA)  # type: ignore[arg-type]
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole is left
                return self.size
            # The file system cannot say where data is: read everything.
            self._seek_data = False
            return offset
        return max(offset, data - data % self.block_size)
