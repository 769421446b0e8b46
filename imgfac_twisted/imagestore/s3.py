"""The S3 image store: target images as objects in a bucket (AWS or any S3-compatible service).

boto3 is blocking: every call goes through the cloud door.  An image is
uploaded in parts (``TransferConfig``) from a stream hashed as it is read,
so the SHA-256 of exactly the bytes sent is compared with the builder's;
it is kept as the object's ``sha256`` metadata.  A mismatch deletes the
object before anybody learns its name (a builder records the location only
after ``put`` fired).  Without access key options boto3's usual credential
chain applies (``AWS_*`` variables, profiles, instance roles).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..doors import IDoor
from .interface import S3_SCHEME, IImageStore, ImageStoreError, is_s3_location
from .streams import HashingReader, SparseHashingWriter

__all__ = ["DEFAULT_PART_SIZE", "S3ImageStore", "S3Settings", "parse_s3_url", "part_size_for"]

MIB = 1024 * 1024
#: The smallest part uploaded (bigger images get bigger parts: ``part_size_for``).
DEFAULT_PART_SIZE = 16 * MIB
#: S3 takes at most 10,000 parts per object; a margin keeps rounding away from it.
MAX_PARTS = 9000
#: Parts uploaded at once, each from its own thread of the transfer.
CONCURRENCY = 4
#: Seconds a presigned download URL stays valid.
URL_EXPIRY = 3600
#: Progress is reported to the reactor at most once per this many bytes.
PROGRESS_STEP = 8 * 1024 * 1024
SHA256_METADATA = "sha256"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix without slashes at its ends; may be empty)."""
    if not is_s3_location(url):
        raise ValueError(f"{url!r} is not s3://bucket/prefix")
    bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def part_size_for(size: int, smallest: int = DEFAULT_PART_SIZE) -> int:
    """The part size for an object of ``size`` bytes: ``smallest``, or whole MiBs enough to stay under MAX_PARTS."""
    needed = -(-size // MAX_PARTS)
    return max(smallest, -(-needed // MIB) * MIB)


@dataclass(frozen=True)
class S3Settings:
    """How to reach the bucket; the secret is never shown (``repr`` hides it)."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    part_size: int = DEFAULT_PART_SIZE
    url_expiry: int = URL_EXPIRY


@implementer(IImageStore)
class S3ImageStore:
    """Images kept as objects under ``s3://bucket/prefix``; boto3 runs on ``door``."""

    def __init__(self, settings: S3Settings, door: IDoor, reactor: Any) -> None:
        self.bucket, self.prefix = parse_s3_url(settings.url)
        self._settings = settings
        self._door = door
        self._reactor = reactor
        self._client: Any = None
        self._client_lock = threading.Lock()

    def describe(self) -> str:
        """``s3://bucket/prefix`` and its endpoint (no credential)."""
        where = self._settings.endpoint or "AWS"
        return f"{S3_SCHEME}{self.bucket}/{self.prefix} at {where}"

    # -- writing -------------------------------------------------------------

    def put(self, source: str, key: str, sha256: str, progress: Callable[[int], None] | None = None) -> Deferred[str]:
        """Upload ``source`` as ``<prefix>/<key>`` (multipart), checked; remove ``source``; fire with its URL."""
        return self._door.run(self.thd_put, source, key, sha256, self._on_reactor(progress))

    def thd_put(self, source: str, key: str, sha256: str, progress: Callable[[int], None] | None = None) -> str:
        """``put``, blocking (run it on a door)."""
        object_key = self._object_key(key)
        client = self._thd_client()
        with open(source, "rb") as stream:
            reader = HashingReader(stream)
            self._call(
                "upload",
                client.upload_fileobj,
                reader,
                self.bucket,
                object_key,
                ExtraArgs={"Metadata": {SHA256_METADATA: sha256}, "ContentType": "application/octet-stream"},
                Callback=_Throttled(progress) if progress else None,
                Config=self._transfer_config(os.path.getsize(source)),
            )
        stored = self._call("HeadObject", client.head_object, Bucket=self.bucket, Key=object_key)
        if reader.hexdigest() != sha256 or stored.get("ContentLength") != reader.size:
            self._call("DeleteObject", client.delete_object, Bucket=self.bucket, Key=object_key)
            raise ImageStoreError(
                f"the image uploaded to {S3_SCHEME}{self.bucket}/{object_key} hashes to {reader.hexdigest()} "
                f"({reader.size} bytes), not {sha256}: not stored"
            )
        os.remove(source)
        return f"{S3_SCHEME}{self.bucket}/{object_key}"

    def delete(self, location: str) -> Deferred[None]:
        """Delete the object (S3 answers the same whether it was there or not)."""
        if not self._is_ours(location):
            return succeed(None)
        return self._door.run(self.thd_delete, location)

    def thd_delete(self, location: str) -> None:
        """``delete``, blocking."""
        client = self._thd_client()
        self._call("DeleteObject", client.delete_object, Bucket=self.bucket, Key=self._key_of(location))

    # -- reading -------------------------------------------------------------

    def local_path(self, location: str) -> str | None:
        """None for an object (it must be fetched); a plain path (an image from before the store) as it is."""
        return None if is_s3_location(location) else location

    def fetch(self, location: str, dest_dir: str, sha256: str | None) -> Deferred[str]:
        """Download the object into ``dest_dir`` (sparse, checked); a plain path is given back as it is."""
        path = self.local_path(location)
        if path is not None:
            return succeed(path)
        return self._door.run(self.thd_fetch, location, dest_dir, sha256)

    def thd_fetch(self, location: str, dest_dir: str, sha256: str | None) -> str:
        """``fetch`` of an object, blocking."""
        object_key = self._key_of(location)
        client = self._thd_client()
        head = self._call("HeadObject", client.head_object, Bucket=self.bucket, Key=object_key)
        expected = sha256 or head.get("Metadata", {}).get(SHA256_METADATA)
        destination = os.path.join(dest_dir, os.path.basename(object_key))
        temporary = f"{destination}.{uuid.uuid4().hex}.part"
        os.makedirs(dest_dir, exist_ok=True)
        try:
            with open(temporary, "wb") as stream:
                writer = SparseHashingWriter(stream.fileno())
                self._call(
                    "download",
                    client.download_fileobj,
                    self.bucket,
                    object_key,
                    writer,
                    Config=self._transfer_config(head.get("ContentLength", 0)),
                )
                writer.finish()
            if expected and writer.hexdigest() != expected:
                raise ImageStoreError(f"{location} downloaded hashes to {writer.hexdigest()}, not {expected}")
            os.rename(temporary, destination)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        return destination

    def download_url(self, location: str) -> Deferred[str | None]:
        """A presigned GET URL of the object (valid ``url_expiry`` seconds); None for a plain path."""
        if not is_s3_location(location):
            return succeed(None)
        return self._door.run(self.thd_download_url, location)

    def thd_download_url(self, location: str) -> str:
        """``download_url`` of an object, blocking (signing is local, but making the client is not)."""
        object_key = self._key_of(location)
        filename = os.path.basename(object_key)
        url: str = self._thd_client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": object_key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=self._settings.url_expiry,
        )
        return url

    # -- helpers -------------------------------------------------------------

    def _thd_client(self) -> Any:
        """The S3 client, made once (boto3 clients are thread-safe; making one reads files)."""
        with self._client_lock:
            if self._client is None:
                settings = self._settings
                session = boto3.session.Session(
                    aws_access_key_id=settings.access_key_id,
                    aws_secret_access_key=settings.secret_access_key,
                    region_name=settings.region,
                )
                style = {"addressing_style": "path"} if settings.endpoint else {}
                self._client = session.client(
                    "s3",
                    endpoint_url=settings.endpoint,
                    config=BotoConfig(signature_version="s3v4", s3=style, retries={"mode": "standard"}),
                )
            return self._client

    def _transfer_config(self, size: int) -> TransferConfig:
        """Parts of ``part_size_for(size)``; the stream is not seekable, so each part is read into memory
        first: at most one part more than the threads upload is held (the default holds ten)."""
        part = part_size_for(size, self._settings.part_size)
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=CONCURRENCY)
        # s3transfer's own setting, which boto3's constructor does not take.
        config.max_in_memory_upload_chunks = CONCURRENCY + 1
        return config

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; boto's errors become ImageStoreError naming the bucket, never a credential."""
        try:
            return fn(*args, **kwargs)
        except ClientError as error:
            detail = error.response.get("Error", {})
            raise ImageStoreError(
                f"image store {S3_SCHEME}{self.bucket}: {what} failed: "
                f"{detail.get('Code', '?')} {detail.get('Message', '')}".rstrip()
            ) from None
        except BotoCoreError as error:
            raise ImageStoreError(
                f"image store {S3_SCHEME}{self.bucket}: {what} failed: {type(error).__name__}"
            ) from None

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _is_ours(self, location: str) -> bool:
        return location.startswith(f"{S3_SCHEME}{self.bucket}/")

    def _key_of(self, location: str) -> str:
        if not self._is_ours(location):
            raise ImageStoreError(f"{location} is not in this node's image store ({self.describe()})")
        return location[len(f"{S3_SCHEME}{self.bucket}/") :]

    def _on_reactor(self, progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
        """``progress`` called on the reactor thread (the upload calls it from its own threads)."""
        if progress is None:
            return None
        reported = progress
        return lambda done: self._reactor.callFromThread(reported, done)


class _Throttled:
    """s3transfer's byte-count callback summed, passed on once per PROGRESS_STEP (not per 256 KiB read)."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self._report = report
        self._done = 0
        self._reported = 0
        self._lock = threading.Lock()

    def __call__(self, bytes_transferred: int) -> None:
        with self._lock:
            self._done += bytes_transferred
            if self._done - self._reported < PROGRESS_STEP:
                return
            self._reported = self._done
        self._report(self._done)
