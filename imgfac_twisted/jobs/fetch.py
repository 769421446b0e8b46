"""Fetching a template given as an http(s) URL, without blocking, within limits."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from ..errors import InvalidTemplate
from ..http_bodies import BodyTooLarge, collect_capped, http_client_on


class TemplateFetcher:
    """Fetches template text by URL with a size cap and an overall time limit."""

    def __init__(self, reactor: Any, timeout: float, max_bytes: int, http_client: Any = None) -> None:
        self._reactor = reactor
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._http = http_client if http_client is not None else http_client_on(reactor)

    async def fetch(self, url: str) -> str:
        """The body of ``url`` as text; InvalidTemplate naming the URL when it cannot be had."""
        too_slow = InvalidTemplate(f"template at {url} could not be fetched within {self._timeout:g} s")
        try:
            fetching = self._get(url)
            # Cancelling treq mid-request fails it with ResponseNeverReceived,
            # whatever the reason: say what really happened.
            fetching.addTimeout(self._timeout, self._reactor, onTimeoutCancel=lambda *_: Failure(too_slow))
            return await fetching
        except BodyTooLarge:
            raise InvalidTemplate(f"template at {url} is larger than {self._max_bytes} bytes") from None
        except (ConnectError, DNSLookupError, ResponseFailed) as error:
            raise InvalidTemplate(f"template at {url} could not be fetched: {error.__class__.__name__}") from None

    def _get(self, url: str) -> Deferred[str]:
        return ensureDeferred(self._get_body(url))

    async def _get_body(self, url: str) -> str:
        response = await self._http.get(url)
        if response.code != 200:
            raise InvalidTemplate(f"template at {url} could not be fetched: HTTP {response.code}")
        chunks: list[bytes] = []
        await collect_capped(response, chunks.append, self._max_bytes)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidTemplate(f"template at {url} is not UTF-8 text") from None
