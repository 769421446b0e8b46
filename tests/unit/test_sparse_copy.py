"""The ec2 target's sparse copy: same bytes, same holes, SHA-256 made while writing."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from imgfac_twisted.targets.sparse import CHUNK, CopyStopped, copy_hashed, data_extents

MIB = 1024 * 1024


def disk(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    """A sparse file of ``size`` bytes with ``pieces`` written at their offsets."""
    with open(path, "wb") as stream:
        stream.truncate(size)
        for offset, data in pieces.items():
            stream.seek(offset)
            stream.write(data)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_copy_has_the_same_bytes_and_hash(tmp_path: Path) -> None:
    """Data at the start, in the middle (not chunk-aligned) and at the very end all arrive; the hash is the file's."""
    size = 9 * MIB + 512
    pieces = {0: b"\x55\xaa" * 256, 3 * MIB + 17: os.urandom(CHUNK + 4096), size - 3: b"end"}
    source = disk(tmp_path / "base.raw", size, pieces)
    seen: list[float] = []
    artifact = copy_hashed(str(source), str(tmp_path / "copy.raw"), seen.append, threading.Event())
    copy = tmp_path / "copy.raw"
    assert copy.read_bytes() == source.read_bytes()
    assert artifact.size == size and artifact.sha256 == sha256_of(source) == sha256_of(copy)
    assert seen[-1] == 100.0 and seen == sorted(set(seen))


def test_holes_stay_holes(tmp_path: Path) -> None:
    """A 64 MiB disk with 1 MiB of data takes about 1 MiB on disk once copied; allocated zeros are not written."""
    source = disk(tmp_path / "base.raw", 64 * MIB, {8 * MIB: os.urandom(MIB), 20 * MIB: bytes(4 * MIB)})
    copy_hashed(str(source), str(tmp_path / "copy.raw"), lambda _: None, threading.Event())
    allocated = os.stat(tmp_path / "copy.raw").st_blocks * 512
    assert allocated <= 2 * MIB, allocated
    assert (tmp_path / "copy.raw").read_bytes() == source.read_bytes()


def test_an_all_hole_disk(tmp_path: Path) -> None:
    source = disk(tmp_path / "base.raw", 3 * MIB, {})
    artifact = copy_hashed(str(source), str(tmp_path / "copy.raw"), lambda _: None, threading.Event())
    assert artifact.sha256 == hashlib.sha256(bytes(3 * MIB)).hexdigest()
    assert list(data_extents(os.open(source, os.O_RDONLY), 3 * MIB)) == []


def test_a_stopped_copy_raises(tmp_path: Path) -> None:
    source = disk(tmp_path / "base.raw", 4 * MIB, {MIB: b"x" * MIB})
    stop = threading.Event()
    stop.set()
    with pytest.raises(CopyStopped):
        copy_hashed(str(source), str(tmp_path / "copy.raw"), lambda _: None, stop)
