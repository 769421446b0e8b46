"""The oauthlib RequestValidator of two-legged OAuth 1.0a, and the memory of spent nonces.

The validator judges timestamps against the clock it is given and refuses
a nonce already used by the same consumer inside the window; why a check
failed is left in the oauthlib request's ``validator_log`` under
``LOG_KEY``, for ``oauth.OAuthVerifier`` to turn into a message.
"""

from __future__ import annotations

import heapq
import math
import secrets
from collections.abc import Mapping

from oauthlib.common import Request
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    RequestValidator,
)
from twisted.internet.interfaces import IReactorTime

ALLOWED_METHODS = (SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256)

# Key under which our validator leaves, in the oauthlib request's
# ``validator_log`` (a dict oauthlib creates afresh for every request), why
# the timestamp/nonce check failed. Per-request state lives there, never on
# the verifier, because one verifier serves every request.
LOG_KEY = "imgfac_timestamp_nonce"
STALE = "stale"
REPLAY = "replay"
BAD_TIMESTAMP = "bad_timestamp"


class NonceMemory:
    """Nonces already used, per consumer key, each until its expiry time.

    A dict answers "was this (key, nonce) used?" in O(1); a heap ordered by
    expiry lets pruning stop at the first live entry, so forgetting costs
    O(log n) per forgotten nonce and nothing when nothing expired.
    """

    def __init__(self) -> None:
        self._expiries: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self._expiries)

    def __contains__(self, key_and_nonce: object) -> bool:
        return key_and_nonce in self._expiries

    def remember(self, client_key: str, nonce: str, expiry: float) -> None:
        """Remember that ``client_key`` used ``nonce``, until ``expiry``."""
        entry = (client_key, nonce)
        # The replay check makes a second insertion impossible today; keeping
        # the later expiry makes the structure safe even if that changes.
        if self._expiries.get(entry, -math.inf) >= expiry:
            return
        self._expiries[entry] = expiry
        heapq.heappush(self._heap, (expiry, client_key, nonce))

    def forget_expired(self, now: float) -> None:
        """Forget every nonce whose expiry is before ``now``."""
        heap = self._heap
        while heap and heap[0][0] < now:
            expiry, client_key, nonce = heapq.heappop(heap)
            entry = (client_key, nonce)
            # Only drop the dict entry if this heap entry is the live one
            # (an older, superseded heap entry must not erase a newer one).
            if self._expiries.get(entry) == expiry:
                del self._expiries[entry]


class TwoLeggedValidator(RequestValidator):
    """oauthlib validator for consumer-key-only (two-legged) OAuth 1.0a."""

    def __init__(
        self,
        clients: Mapping[str, str],
        clock: IReactorTime,
        timestamp_window: int,
        nonces: NonceMemory,
    ) -> None:
        super().__init__()
        self._clients = dict(clients)
        self._clock = clock
        self._window = timestamp_window
        self._nonces = nonces
        # Random per process, so nobody can produce a signature that verifies
        # against the dummy client oauthlib substitutes for unknown keys.
        self._dummy_secret = secrets.token_urlsafe(32)

    # -- policy knobs read by oauthlib ------------------------------------

    @property
    def allowed_signature_methods(self) -> tuple[str, ...]:
        """Return the accepted signature methods: HMAC-SHA1 and HMAC-SHA256."""
        return ALLOWED_METHODS

    @property
    def enforce_ssl(self) -> bool:
        """Return False: the daemon decides about TLS itself (--no_ssl)."""
        return False

    @property
    def timestamp_lifetime(self) -> float:  # type: ignore[override]  # types-oauthlib says int; inf is on purpose
        """Return infinity, which disables oauthlib's own timestamp check.

        oauthlib compares the timestamp with ``time.time()``; we compare it
        with the injected clock in :meth:`validate_timestamp_and_nonce`, and
        two clocks must not both have a say.
        """
        return math.inf

    @property
    def dummy_client(self) -> str:
        """Return the key oauthlib uses in place of an unknown one."""
        return "imgfac-dummy-client"

    @property
    def dummy_access_token(self) -> str:
        """Return a placeholder token (tokens are refused anyway)."""
        return "imgfac-dummy-token"

    def check_client_key(self, client_key: str) -> bool:
        """Accept any consumer key: keys are whatever the config names."""
        return True

    def check_nonce(self, nonce: str) -> bool:
        """Accept any nonce: clients choose their own format and length."""
        return True

    # -- lookups ----------------------------------------------------------

    def validate_client_key(self, client_key: str, request: Request) -> bool:
        """Return whether ``client_key`` is a configured consumer."""
        return client_key in self._clients

    def get_client_secret(self, client_key: str, request: Request) -> str:
        """Return the consumer's secret, or the dummy secret if unknown."""
        # Same dict lookup either way, so timing does not reveal the keys.
        return self._clients.get(client_key, self._dummy_secret)

    def get_access_token_secret(self, client_key: str, token: str, request: Request) -> str:
        """Return a secret no client knows: tokens are never issued."""
        return self._dummy_secret

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Request,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        """Return whether the timestamp is in the window and the nonce unused.

        oauthlib calls this before it checks the signature, so it only looks
        the nonce up; :meth:`OAuthVerifier.verify` records it once the whole
        request verified, so a forged request cannot burn a nonce.
        """
        # oauthlib checked "10 characters, int() accepts it"; int() also
        # accepts signs, underscores and non-ASCII digits, which we refuse.
        if not (timestamp.isascii() and timestamp.isdigit()):
            request.validator_log[LOG_KEY] = BAD_TIMESTAMP
            return False
        if abs(self._clock.seconds() - int(timestamp)) > self._window:
            request.validator_log[LOG_KEY] = STALE
            return False
        if (client_key, nonce) in self._nonces:
            request.validator_log[LOG_KEY] = REPLAY
            return False
        return True
