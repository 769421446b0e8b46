"""Downloading installer files (kernel, initrd, ISO) without blocking, within limits, cached.

Messages and log lines show URLs without the password of their user info.

A file is streamed to ``<name>.<random>.partial`` and renamed once complete,
so a cut download never passes for a whole one and two builds fetching the
same file at once do not write over each other.  Files of one install tree
are kept under ``<cache root>/<sha256 of the tree URL>/``: a second build of
the same tree downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from ..errors import ImageFactoryError
from ..http_bodies import BodyTooLarge, collect_capped, http_client_on
from ..redaction import redact_url

#: How much of an error response's body is read (and dropped).
ERROR_BODY_BYTES = 64 * 1024
#: The HTTP statuses that say "no such file" when an optional file is probed.
#: S3-backed mirrors and many CDNs answer 403 for a key that does not exist
#: (S3 does unless the caller may list the bucket), so it is one of them.
ABSENT_STATUSES = frozenset({403, 404, 410})

Progress = Callable[[int, "int | None"], None]


class DownloadFailed(ImageFactoryError):
    """A download did not complete; says which URL and why.  ``code`` is the HTTP status, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def absent(self) -> bool:
        """Whether the server's answer may mean the file is not there (see ABSENT_STATUSES)."""
        return self.code in ABSENT_STATUSES


def tree_key(tree_url: str) -> str:
    """The cache folder name of an install tree: the SHA-256 of its URL."""
    return hashlib.sha256(tree_url.encode("utf-8")).hexdigest()


def join_url(tree_url: str, relative: str) -> str:
    """``relative`` (a path inside the tree) appended to the tree's URL."""
    return tree_url.rstrip("/") + "/" + relative.lstrip("/")


def check_http_url(url: str, what: str) -> None:
    """Refuse anything but an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadFailed(f"{what} {redact_url(url)!r} is not an http or https URL")


class Downloader:
    """Downloads files to disk with a size cap and an overall time limit per file."""

    def __init__(self, reactor: Any, cache_root: str, timeout: float, max_bytes: int, http_client: Any = None) -> None:
        self._reactor = reactor
        self._cache_root = cache_root
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._http = http_client if http_client is not None else http_client_on(reactor)

    def tree_dir(self, tree_url: str) -> str:
        """The cache folder of the install tree at ``tree_url``."""
        return os.path.join(self._cache_root, tree_key(tree_url))

    def cached_path(self, tree_url: str, relative: str) -> str:
        """Where the tree's file ``relative`` is (or will be) cached."""
        safe = posixpath.normpath("/" + relative).lstrip("/")
        return os.path.join(self.tree_dir(tree_url), *safe.split("/"))

    async def from_tree(
        self, tree_url: str, relative: str, progress: Progress | None = None, log: Callable[[str], None] | None = None
    ) -> str:
        """The local path of the tree's file ``relative``, downloaded unless cached already."""
        return await self.cached(join_url(tree_url, relative), self.cached_path(tree_url, relative), progress, log)

    def file_path(self, url: str) -> str:
        """Where a file downloaded on its own (an ISO) is cached: by its URL, under its base name."""
        name = posixpath.basename(urlsplit(url).path)
        if name in ("", ".", ".."):
            name = "download"
        return os.path.join(self.tree_dir(url), name)

    async def cached(
        self, url: str, path: str, progress: Progress | None = None, log: Callable[[str], None] | None = None
    ) -> str:
        """``path``, downloaded from ``url`` unless it is there already."""
        if os.path.exists(path):
            if log:
                log(f"using the cached copy of {redact_url(url)}")
            return path
        if log:
            log(f"downloading {redact_url(url)}")
        size = await self.download(url, path, progress)
        if log:
            log(f"downloaded {redact_url(url)} ({size} bytes)")
        return path

    def download(self, url: str, destination: str, progress: Progress | None = None) -> Deferred[int]:
        """Stream ``url`` to ``destination``; fire with its size, or fail with DownloadFailed."""
        too_slow = DownloadFailed(f"download of {redact_url(url)} did not finish within {self._timeout:g} s")
        fetching = ensureDeferred(self._download(url, destination, progress))
        # Cancelling treq mid-request fails it with ResponseNeverReceived
        # whatever the reason: say what really happened.
        fetching.addTimeout(self._timeout, self._reactor, onTimeoutCancel=lambda *_: Failure(too_slow))
        return fetching

    async def _download(self, url: str, destination: str, progress: Progress | None) -> int:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        partial = f"{destination}.{uuid.uuid4().hex[:12]}.partial"
        try:
            response = await self._http.get(url)
            await self._check_response(url, response)
            received = await self._save(url, response, partial, progress)
            os.replace(partial, destination)
            return received
        except BodyTooLarge:
            raise DownloadFailed(f"{redact_url(url)} is larger than the limit of {self._max_bytes} bytes") from None
        except (ConnectError, DNSLookupError, ResponseFailed, ResponseNeverReceived) as error:
            raise DownloadFailed(f"download of {redact_url(url)} failed: {_reason(error)}") from None
        finally:
            _remove(partial)

    async def _check_response(self, url: str, response: Any) -> None:
        if response.code == 200:
            length = response.length
            if isinstance(length, int) and length > self._max_bytes:
                await _drop_body(response)
                raise BodyTooLarge()
            return
        await _drop_body(response)
        raise DownloadFailed(f"download of {redact_url(url)} failed: {_status(response.code)}", code=response.code)

    async def _save(self, url: str, response: Any, partial: str, progress: Progress | None) -> int:
        total = response.length if isinstance(response.length, int) else None
        # Writes go straight to the file from the reactor thread: chunks are
        # network-sized and land in the page cache; a thread hop per chunk
        # would cost more than the write and could reorder chunks.
        with open(partial, "wb") as stream:

            def write(data: bytes) -> None:
                stream.write(data)
                if progress is not None:
                    progress(stream.tell(), total)

            received = await collect_capped(response, write, self._max_bytes)
        if total is not None and received != total:
            raise DownloadFailed(f"download of {redact_url(url)} failed: {received} of {total} bytes received")
        return received


async def _drop_body(response: Any) -> None:
    """Read a little of an unwanted body, so the connection is not left hanging."""
    try:
        await collect_capped(response, lambda data: None, ERROR_BODY_BYTES)
    except Exception:  # the body does not matter; the status was the answer
        pass


def _status(code: int) -> str:
    """``HTTP 403 Forbidden``: the status with its standard phrase, when it has one."""
    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def _reason(error: Exception) -> str:
    if isinstance(error, (ResponseFailed, ResponseNeverReceived)) and error.reasons:
        return f"{error.__class__.__name__} ({error.reasons[0].getErrorMessage()})"
    return f"{error.__class__.__name__} ({error})"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
