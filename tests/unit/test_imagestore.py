"""The image stores: a directory (rename, or a checked sparse copy across file systems) and S3 (moto in-process).

The S3 store's wire behaviour against a real ``moto_server`` (multipart,
presigned downloads) is in tests/integration/test_imagestore_s3.py.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from test_conductor_unit import Conductor, new_image
from test_dispatcher import start_build
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed

from imgfac_twisted.config import Config
from imgfac_twisted.errors import ConfigError
from imgfac_twisted.imagestore import (
    DirectoryImageStore,
    ImageStoreError,
    S3ImageStore,
    S3Settings,
    image_key,
    image_store_from_config,
    put_or_clean_up,
)
from imgfac_twisted.imagestore import directory as directory_module
from imgfac_twisted.imagestore.s3 import part_size_for
from imgfac_twisted.imagestore.streams import SparseHashingWriter
from imgfac_twisted.model import Status
from imgfac_twisted.testing import FakeReactor, InlineDoor, result_of
from imgfac_twisted.web.factory import FactoryAPI
from imgfac_twisted.web.fast_reads import FactoryRoot

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part


def sparse_image(path: Path, size: int, pieces: dict[int, bytes]) -> tuple[str, str]:
    """A sparse file with ``pieces`` at their offsets; its path and SHA-256."""
    with open(path, "wb") as stream:
        stream.truncate(size)
        for offset, data in pieces.items():
            stream.seek(offset)
            stream.write(data)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


# -- the directory store --------------------------------------------------------


def test_a_put_on_the_same_file_system_renames_the_image_in(tmp_path: Path) -> None:
    """The image moves to <root>/<builder id>/<name>, no temporary file is left, the source is gone."""
    store = DirectoryImageStore(str(tmp_path / "images"), InlineDoor())
    source, digest = sparse_image(tmp_path / "disk.raw", 3 * MIB, {MIB: b"data"})
    location = result_of(store.put(source, image_key("b1", source), digest))
    assert location == str(tmp_path / "images" / "b1" / "disk.raw")
    assert not os.path.exists(source)
    assert os.listdir(tmp_path / "images" / "b1") == ["disk.raw"]
    assert store.local_path(location) == location and result_of(store.fetch(location, str(tmp_path), None)) == location
    assert result_of(store.download_url(location)) is None


def cross_device(monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Make renaming ``source`` fail as it does between two file systems."""
    real_rename = os.rename

    def rename(old: str, new: str) -> None:
        if old == source:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(old, new)

    monkeypatch.setattr(directory_module.os, "rename", rename)


def test_a_put_across_file_systems_copies_sparse_and_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across file systems the image is copied with its holes kept, hashed, and the source removed."""
    store = DirectoryImageStore(str(tmp_path / "images"), InlineDoor())
    source, digest = sparse_image(tmp_path / "disk.raw", 64 * MIB, {0: b"boot", 40 * MIB: os.urandom(MIB)})
    expected = Path(source).read_bytes()
    cross_device(monkeypatch, source)
    location = result_of(store.put(source, "b2/disk.raw", digest))
    assert Path(location).read_bytes() == expected and not os.path.exists(source)
    assert allocated(location) < 8 * MIB, "the holes stay holes"


def test_a_copy_that_does_not_hash_to_the_builders_sha256_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mismatch stores nothing (no file, no temporary) and keeps the source."""
    store = DirectoryImageStore(str(tmp_path / "images"), InlineDoor())
    source, _ = sparse_image(tmp_path / "disk.raw", MIB, {0: b"x"})
    cross_device(monkeypatch, source)
    with pytest.raises(ImageStoreError, match="not stored"):
        result_of(store.put(source, "b3/disk.raw", "0" * 64))
    assert os.listdir(tmp_path / "images" / "b3") == [] and os.path.exists(source)


def test_keys_cannot_leave_the_root_and_delete_keeps_to_it(tmp_path: Path) -> None:
    """A key is <builder id>/<name>; delete removes the image and its folder, and nothing outside the root."""
    store = DirectoryImageStore(str(tmp_path / "images"), InlineDoor())
    source, digest = sparse_image(tmp_path / "disk.raw", MIB, {0: b"x"})
    with pytest.raises(ImageStoreError):
        result_of(store.put(source, "../../escape", digest))
    outside, _ = sparse_image(tmp_path / "outside.raw", 10, {})
    result_of(store.delete(outside))
    assert os.path.exists(outside)
    location = result_of(store.put(source, "b4/disk.raw", digest))
    result_of(store.delete(location))
    assert not os.path.exists(os.path.dirname(location))


def test_the_config_chooses_the_store(tmp_path: Path) -> None:
    """Default: <state_dir>/images (made); s3:// gives the S3 store; another scheme is a config error."""
    door, reactor = InlineDoor(), FakeReactor()
    default = image_store_from_config(Config(state_dir=str(tmp_path)), door, door, reactor)
    assert isinstance(default, DirectoryImageStore) and os.path.isdir(tmp_path / "images")
    s3 = image_store_from_config(
        Config(state_dir=str(tmp_path), image_store="s3://bucket/some/prefix/", image_store_secret_access_key="S3CRET"),
        door,
        door,
        reactor,
    )
    assert isinstance(s3, S3ImageStore) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert "S3CRET" not in s3.describe() and "S3CRET" not in repr(s3._settings)
    for wrong in ("ftp://host/x", "s3:///nobucket"):
        with pytest.raises(ConfigError, match="image_store"):
            image_store_from_config(Config(state_dir=str(tmp_path), image_store=wrong), door, door, reactor)


def test_a_mock_build_ends_completed_with_its_image_in_the_store(stack: Any) -> None:
    """The builder's artifact_path is in the image store; its work folder no longer holds the image."""
    builder_id = start_build(stack).target_images[0].id
    stack.run_for(2)
    done = stack.index.get(builder_id)
    assert done.status == Status.COMPLETED
    assert done.artifact_path == os.path.join(stack.config.state_dir, "images", builder_id, "mock.img")
    assert hashlib.sha256(Path(done.artifact_path).read_bytes()).hexdigest() == done.artifact_sha256
    assert not os.path.exists(os.path.join(stack.config.state_dir, "builders", builder_id, "mock.img"))


# -- the S3 store (moto in-process: no socket) -----------------------------------


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3ImageStore]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="images")
        settings = S3Settings(url="s3://images/factory", region="us-east-1", part_size=PART)
        yield S3ImageStore(settings, InlineDoor(), FakeReactor())


def test_s3_put_uploads_in_parts_with_the_sha256_as_metadata(tmp_path: Path, s3_store: S3ImageStore) -> None:
    """An image larger than a part goes up in parts; the object holds its bytes and its sha256; the source goes."""
    source, digest = sparse_image(tmp_path / "disk.raw", 2 * PART + 123, {7: os.urandom(PART + 5)})
    expected = Path(source).read_bytes()
    location = s3_store.thd_put(source, "b1/disk.raw", digest)
    assert location == "s3://images/factory/b1/disk.raw" and not os.path.exists(source)
    client = s3_store._thd_client()
    head = client.head_object(Bucket="images", Key="factory/b1/disk.raw")
    assert head["Metadata"]["sha256"] == digest and head["ContentLength"] == len(expected)
    assert head["ETag"].strip('"').endswith("-3"), "three parts"
    fetched = result_of(s3_store.fetch(location, str(tmp_path / "push"), digest))
    assert Path(fetched).read_bytes() == expected and fetched == str(tmp_path / "push" / "disk.raw")
    assert allocated(fetched) < len(expected), "the download leaves zeros as holes"


def test_s3_put_with_a_wrong_sha256_stores_nothing(tmp_path: Path, s3_store: S3ImageStore) -> None:
    """The object is deleted again and the failure names both digests; the source stays for the builder."""
    source, digest = sparse_image(tmp_path / "disk.raw", PART + 1, {0: b"abc"})
    with pytest.raises(ImageStoreError, match=digest):
        result_of(s3_store.put(source, "b2/disk.raw", "f" * 64))
    listed = s3_store._thd_client().list_objects_v2(Bucket="images")
    assert listed.get("KeyCount") == 0 and os.path.exists(source)


def test_s3_fetch_refuses_a_download_that_does_not_match(tmp_path: Path, s3_store: S3ImageStore) -> None:
    """A fetched copy that hashes otherwise than the builder's sha256 fails and leaves no file behind."""
    source, digest = sparse_image(tmp_path / "disk.raw", 100, {0: b"abc"})
    location = s3_store.thd_put(source, "b3/disk.raw", digest)
    with pytest.raises(ImageStoreError, match="hashes to"):
        result_of(s3_store.fetch(location, str(tmp_path / "push"), "e" * 64))
    assert os.listdir(tmp_path / "push") == []


def test_s3_errors_name_the_bucket_and_the_call(tmp_path: Path, s3_store: S3ImageStore) -> None:
    """A missing object is an ImageStoreError naming the bucket; a plain path is read as a local file."""
    with pytest.raises(ImageStoreError, match=r"s3://images: HeadObject failed: 404"):
        result_of(s3_store.fetch("s3://images/factory/nothing/here.raw", str(tmp_path), None))
    with pytest.raises(ImageStoreError, match="not in this node's image store"):
        result_of(s3_store.fetch("s3://other/x/y", str(tmp_path), None))
    assert result_of(s3_store.fetch("/old/path.raw", str(tmp_path), None)) == "/old/path.raw"


def test_s3_download_url_is_presigned_for_the_object(tmp_path: Path, s3_store: S3ImageStore) -> None:
    """The URL names the object, is signed (SigV4) and asks for an attachment named after the file."""
    source, digest = sparse_image(tmp_path / "disk.qcow2", 100, {0: b"abc"})
    location = s3_store.thd_put(source, "b4/disk.qcow2", digest)
    url = result_of(s3_store.download_url(location))
    assert url is not None and "factory/b4/disk.qcow2" in url
    assert "X-Amz-Signature=" in url and "response-content-disposition=attachment" in url


def test_the_sparse_writer_writes_data_and_leaves_holes(tmp_path: Path) -> None:
    """Zero chunks become holes, the length is whole, the hash covers every byte."""
    chunks = [bytes(MIB), b"data" * 1000, bytes(3 * MIB)]
    with open(tmp_path / "out", "wb") as stream:
        writer = SparseHashingWriter(stream.fileno())
        for chunk in chunks:
            writer.write(chunk)
        writer.finish()
    assert (tmp_path / "out").read_bytes() == b"".join(chunks)
    assert writer.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert allocated(str(tmp_path / "out")) < MIB


# -- raw_image from either store (the web route, in memory) ------------------------


class PresigningStore:
    """Answers download URLs as an S3 store does; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def download_url(self, location: str) -> Any:
        self.asked.append(location)
        return succeed(f"https://bucket.example/{os.path.basename(location)}?X-Amz-Signature=abc")

    def local_path(self, location: str) -> None:
        return None


def completed_target(stack: Any) -> tuple[Any, str, Any]:
    """A StubTreq client, a COMPLETED mock target's raw_image path and its builder."""
    api = FactoryAPI(stack.dispatcher, stack.index, stack.logs, stack.metrics, None)
    started = start_build(stack)
    stack.run_for(2)
    target = started.target_images[0]
    path = f"/imagefactory/images/{started.image.id}/builds/{started.build.id}/target_images/{target.id}/raw_image"
    return StubTreq(FactoryRoot(api, api.app.resource())), "http://host" + path, stack.index.get(target.id)


def test_raw_image_from_a_directory_store_is_not_redirected(stack: Any) -> None:
    """The directory store gives no URL: a client holding the image gets 304 (the 200 with the bytes is
    checked through the real daemon in tests/integration/test_downloads.py)."""
    treq, url, builder = completed_target(stack)
    assert result_of(stack.dispatcher.image_store.download_url(builder.artifact_path)) is None
    cached = result_of(treq.get(url, headers={"If-None-Match": f'"{builder.artifact_sha256}"'}))
    assert cached.code == 304


def test_raw_image_from_an_s3_store_redirects_to_the_presigned_url(stack: Any) -> None:
    """302 with the store's URL in Location, asked for the builder's location; 304 still wins for a cached copy."""
    treq, url, builder = completed_target(stack)
    presigning = PresigningStore()
    stack.dispatcher.image_store = presigning
    answer = result_of(treq.get(url, allow_redirects=False))
    assert answer.code == 302
    assert answer.headers.getRawHeaders("location") == ["https://bucket.example/mock.img?X-Amz-Signature=abc"]
    assert presigning.asked == [builder.artifact_path]
    cached = result_of(treq.get(url, headers={"If-None-Match": f'"{builder.artifact_sha256}"'}))
    assert cached.code == 304 and len(presigning.asked) == 1


class SlowStore:
    """A store whose puts land when the test says; records deletions."""

    def __init__(self) -> None:
        self.putting: Deferred[str] = Deferred()
        self.deleted: list[str] = []

    def put(self, source: str, key: str, sha256: str) -> Deferred[str]:
        return self.putting

    def delete(self, location: str) -> Deferred[None]:
        self.deleted.append(location)
        return succeed(None)


def test_a_put_cancelled_midway_removes_the_image_once_it_lands() -> None:
    """The builder stops waiting at once; the image stored afterwards is deleted, not left orphaned."""
    store = SlowStore()
    waiting = ensureDeferred(put_or_clean_up(store, "/src", "b/x.raw", "0" * 64))
    waiting.cancel()
    with pytest.raises(CancelledError):
        result_of(waiting)
    assert store.deleted == []
    store.putting.callback("s3://bucket/b/x.raw")
    assert store.deleted == ["s3://bucket/b/x.raw"]


def test_a_put_not_cancelled_keeps_its_image() -> None:
    """Without a cancel the location is the put's and nothing is deleted."""
    store = SlowStore()
    waiting = ensureDeferred(put_or_clean_up(store, "/src", "b/x.raw", "0" * 64))
    store.putting.callback("s3://bucket/b/x.raw")
    assert result_of(waiting) == "s3://bucket/b/x.raw" and store.deleted == []


def test_deleting_a_target_image_removes_it_from_the_store(stack: Any) -> None:
    """A Conductor DELETE of a COMPLETED target image removes its image and folder from the image store."""
    conductor = Conductor(stack)
    target_id = new_image(conductor).find("build/target_images/target_image").get("id")
    stack.run_for(2)
    stored = stack.index.get(target_id).artifact_path
    assert os.path.isfile(stored) and stored.startswith(os.path.join(stack.config.state_dir, "images"))
    conductor.xml("DELETE", f"/target_images/{target_id}")
    assert not os.path.exists(os.path.dirname(stored))


def test_parts_grow_with_the_image_to_stay_under_s3s_part_limit() -> None:
    """16 MiB parts up to 9,000 of them; beyond, whole MiBs just large enough (a 1 TiB disk: 117 MiB parts)."""
    assert part_size_for(MIB) == part_size_for(9000 * 16 * MIB) == 16 * MIB
    assert part_size_for(1024**4) == 117 * MIB and -(-(1024**4) // (117 * MIB)) <= 10_000
    assert part_size_for(100, PART) == PART
