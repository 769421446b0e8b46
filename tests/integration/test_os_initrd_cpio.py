"""The initrd we append to is read back by the real cpio (GNU or busybox) as we wrote it."""

import gzip
import shutil
import subprocess

import pytest

from imgfac_twisted.os.initrd import append_file

CPIO = ["cpio"] if shutil.which("cpio") else ["busybox", "cpio"] if shutil.which("busybox") else None


@pytest.mark.skipif(CPIO is None, reason="neither cpio nor busybox is installed")
def test_cpio_reads_the_member(tmp_path):
    """cpio (GNU or busybox) lists and extracts the appended archive as we wrote it."""
    path = tmp_path / "initrd.img"
    path.write_bytes(b"")
    append_file(str(path), "ks.cfg", b"hello")
    archive = gzip.decompress(path.read_bytes())
    listing = subprocess.run([*CPIO, "-itv"], input=archive, capture_output=True, check=True)
    assert b"ks.cfg" in listing.stdout and b"-rw-r--r--" in listing.stdout
    subprocess.run([*CPIO, "-id"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "ks.cfg").read_bytes() == b"hello"
