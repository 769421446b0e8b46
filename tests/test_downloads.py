"""Downloading target images from the real daemon, over TLS, byte for byte."""

import hashlib

import pytest

from daemon import Daemon
from imgfac_twisted.testing import SPEC_TEMPLATE

pytestmark = pytest.mark.integration


def test_raw_image_downloads_as_made(daemon: Daemon) -> None:
    """A COMPLETED target image comes back whole: no Content-Encoding, its size and SHA-256 as recorded."""
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": SPEC_TEMPLATE})
    href = answer.json()["build"]["target_images"][0]["href"]
    detail = daemon.wait_final(href)
    response = daemon.get(href + "/raw_image", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert len(response.content) == detail["image_size"]
    assert hashlib.sha256(response.content).hexdigest() == detail["image_sha256"]
    ranged = daemon.get(href + "/raw_image", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == response.content[:10]
