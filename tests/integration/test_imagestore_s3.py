"""The S3 image store against a real ``moto_server``, alone and under the real daemon.

Alone: a multipart upload and a presigned download over HTTP.  Under the
daemon (``image_store`` ``s3://...``): a Mock-OS build to a qcow2 target ends
COMPLETED with its object in the bucket, ``raw_image`` answers 302 to a URL
that downloads the same bytes, and a push reads the image back from there.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from imgfac_twisted.imagestore import S3ImageStore, S3Settings
from imgfac_twisted.testing import FakeReactor, InlineDoor
from support.daemon import Daemon, DaemonPool, mock_config
from support.moto_peer import MotoServer, s3_client

MIB = 1024 * 1024
BUCKET = "factory-images"
SECRET = "image-store-SECRET-5e2b9d1c"
TEMPLATE = (
    "<template><name>stored</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>s3</description></template>"
)
CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>u</username>"
    "<password>pw</password></mock_credentials></provider_credentials>"
)


@pytest.fixture(scope="module")
def bucket(moto: MotoServer) -> Any:
    client = s3_client(moto)
    client.create_bucket(Bucket=BUCKET)
    return client


def test_multipart_put_and_presigned_download_over_http(tmp_path: Path, moto: MotoServer, bucket: Any) -> None:
    """An image of three parts goes up whole with its sha256; the presigned URL downloads the same bytes."""
    store = S3ImageStore(
        S3Settings(
            url=f"s3://{BUCKET}/unit",
            endpoint=moto.url,
            region="us-east-1",
            access_key_id="testing",
            secret_access_key="testing",
            part_size=5 * MIB,
        ),
        InlineDoor(),
        FakeReactor(),
    )
    data = os.urandom(11 * MIB + 3)
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    location = store.thd_put(str(source), "b1/disk.raw", digest)
    head = bucket.head_object(Bucket=BUCKET, Key="unit/b1/disk.raw")
    assert head["ETag"].strip('"').endswith("-3") and head["Metadata"]["sha256"] == digest
    answer = requests.get(store.thd_download_url(location), timeout=30)
    assert answer.status_code == 200 and answer.content == data
    assert 'filename="disk.raw"' in answer.headers.get("content-disposition", "")


@pytest.fixture(scope="module")
def s3_daemon(module_daemon_factory: DaemonPool, moto: MotoServer, bucket: Any) -> Daemon:
    config = mock_config(
        image_store=f"s3://{BUCKET}/daemon",
        image_store_endpoint=moto.url,
        image_store_region="us-east-1",
        image_store_access_key_id="testing",
        image_store_secret_access_key=SECRET,
    )
    return module_daemon_factory.make(config, name="s3")


def build(daemon: Daemon, targets: str) -> list[dict[str, Any]]:
    answer = daemon.post("/imagefactory/images", data={"targets": targets, "template": TEMPLATE})
    assert answer.status_code == 202, answer.text
    return answer.json()["build"]["target_images"]


def test_a_build_puts_its_images_in_the_bucket(s3_daemon: Daemon, bucket: Any) -> None:
    """qcow2 and mock targets end COMPLETED; each object is in the bucket with the builder's sha256;
    the builder's folder keeps no image; raw_image is a 302 to the same bytes; the secret is never logged."""
    for target in build(s3_daemon, "openstack-kvm,mock"):
        detail = s3_daemon.wait_final(target["href"], timeout=120)
        assert detail["status"] == "COMPLETED", detail
        listed = bucket.list_objects_v2(Bucket=BUCKET, Prefix=f"daemon/{target['id']}/")["Contents"]
        assert len(listed) == 1
        stored = bucket.get_object(Bucket=BUCKET, Key=listed[0]["Key"])
        body = stored["Body"].read()
        assert stored["Metadata"]["sha256"] == detail["image_sha256"] == hashlib.sha256(body).hexdigest()
        assert os.listdir(s3_daemon.state_dir / "builders" / target["id"]) == ["builder.log"]
        redirect = s3_daemon.get(target["href"] + "/raw_image", allow_redirects=False)
        assert redirect.status_code == 302, redirect.text
        downloaded = requests.get(redirect.headers["location"], timeout=30)
        assert downloaded.status_code == 200 and downloaded.content == body
        cached = s3_daemon.get(target["href"] + "/raw_image", headers={"If-None-Match": f'"{detail["image_sha256"]}"'})
        assert cached.status_code == 304
    assert SECRET not in s3_daemon.log_text() + s3_daemon.output_text()


def test_a_push_reads_the_image_back_from_the_bucket(s3_daemon: Daemon) -> None:
    """The mock push fetches the object into its own folder, reads it, and removes the copy after."""
    target = build(s3_daemon, "mock")[0]
    assert s3_daemon.wait_final(target["href"])["status"] == "COMPLETED"
    answer = s3_daemon.post(target["href"] + "/provider_images", data={"provider": "mock", "credentials": CREDENTIALS})
    assert answer.status_code == 202, answer.text
    pushed = s3_daemon.wait_final(answer.json()["href"])
    assert pushed["status"] == "COMPLETED", pushed
    log = s3_daemon.get(f"/imagefactory/builders/{pushed['id']}/log").text
    fetched = str(s3_daemon.state_dir / "builders" / pushed["id"] / "mock.img")
    assert f"s3://{BUCKET}/daemon/{target['id']}/mock.img (read from {fetched})" in log
    deadline = time.monotonic() + 5
    while os.path.exists(fetched) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(fetched), "the fetched copy is removed after the push"
