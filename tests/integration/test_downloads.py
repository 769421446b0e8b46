"""Downloading target images from the real daemon, over TLS, byte for byte."""

import hashlib

from imgfac_twisted.testing import SPEC_TEMPLATE
from support.daemon import CLIENTS, Daemon, DaemonPool


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
    assert response.headers["Content-Length"] == str(detail["image_size"])
    assert response.headers["ETag"] == f'"{detail["image_sha256"]}"'
    ranged = daemon.get(href + "/raw_image", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == response.content[:10]
    unchanged = daemon.get(href + "/raw_image", headers={"If-None-Match": response.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""
    other = daemon.get(href + "/raw_image", headers={"If-None-Match": '"0000"'})
    assert other.status_code == 200 and len(other.content) == detail["image_size"]


def test_raw_image_is_not_found_until_completed(daemon_factory: DaemonPool) -> None:
    """While the target image is being made, its raw_image is 404 naming its status."""
    daemon = daemon_factory({"clients": dict(CLIENTS), "mock_duration": 3.0})
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": SPEC_TEMPLATE})
    href = answer.json()["build"]["target_images"][0]["href"]
    early = daemon.get(href + "/raw_image")
    assert early.status_code == 404, early.text
    assert early.json()["code"] == 404 and "COMPLETED" in early.json()["message"]
    daemon.wait_final(href)
    assert daemon.get(href + "/raw_image").status_code == 200
