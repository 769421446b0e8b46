"""Appending a file to an initrd as a gzip newc cpio archive."""

import os

import pytest

from imgfac_twisted.os.initrd import append_file, copy_and_append, newc_archive
from imgfac_twisted.os.testing import appended_members, read_newc


def test_newc_archive_layout():
    """Headers are 110 bytes, name and data padded to 4 bytes, and the archive ends with the trailer."""
    archive = newc_archive({"ks.cfg": b"12345"})
    assert len(archive) % 4 == 0
    members = read_newc(archive)
    assert members == [("ks.cfg", 0o100644, b"12345"), ("TRAILER!!!", 0, b"")]
    # name "ks.cfg\0" (7) after the 110-byte header: padded to 120; data 5 -> 8.
    assert archive[120:125] == b"12345" and archive[125:128] == b"\0\0\0"


@pytest.mark.parametrize("original_length", [0, 1, 2, 3, 4, 1001])
def test_append_keeps_the_original_and_adds_the_member(tmp_path, original_length):
    """The original bytes stay in front; the member decompresses to ks.cfg, mode 0644."""
    original = os.urandom(original_length)
    path = tmp_path / "initrd.img"
    path.write_bytes(original)
    append_file(str(path), "ks.cfg", b"text\npoweroff\n")
    result = path.read_bytes()
    assert result[:original_length] == original
    # Zero padding to a 4-byte boundary, then a gzip stream.
    start = original_length + (-original_length % 4)
    assert result[original_length:start] == bytes(start - original_length)
    assert result[start : start + 2] == b"\x1f\x8b"
    assert appended_members(result, original_length) == [
        ("ks.cfg", 0o100644, b"text\npoweroff\n"),
        ("TRAILER!!!", 0, b""),
    ]


def test_copy_and_append_leaves_the_cached_initrd_alone(tmp_path):
    """The cached initrd is not changed; the copy gets the member and no .partial is left."""
    cached = tmp_path / "cache.img"
    cached.write_bytes(b"original")
    copy = tmp_path / "work" / "initrd.img"
    copy.parent.mkdir()
    copy_and_append(str(cached), str(copy), "preseed.cfg", b"d-i x")
    assert cached.read_bytes() == b"original"
    assert appended_members(copy.read_bytes(), 8)[0] == ("preseed.cfg", 0o100644, b"d-i x")
    assert os.listdir(copy.parent) == ["initrd.img"]
