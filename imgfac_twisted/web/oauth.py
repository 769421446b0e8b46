"""Two-legged OAuth 1.0a verification of write requests.

Clients sign each write request with a consumer key and its shared secret
(no request or access tokens: "two-legged" OAuth 1.0a, RFC 5849 with an
empty token). :class:`OAuthVerifier` checks such a signature with
oauthlib's :class:`~oauthlib.oauth1.SignatureOnlyEndpoint` and a
:class:`~oauthlib.oauth1.RequestValidator` of our own (``oauth_validator``), which

* accepts HMAC-SHA1 and HMAC-SHA256 only;
* accepts consumer keys and nonces of any length and alphabet (a key is
  whatever the configuration file names);
* judges timestamps against the clock it is given (the reactor, or a
  :class:`twisted.internet.task.Clock` in tests), not ``time.time()``;
* refuses a nonce already used by the same consumer inside the window, and
  forgets nonces once their timestamp has left the window, so memory stays
  bounded;
* hands every spent nonce to ``spent`` (the daemon writes it to the store,
  off the reactor) and starts from ``known_nonces`` (read from the store at
  start), so a request replayed right after a restart is refused too;
* checks ``oauth_body_hash`` (the OAuth Request Body Hash extension, which
  the Ruby ``oauth`` gem adds to every JSON body it signs) against the body
  actually received, and, with ``require_body_hash``, refuses a signed body
  that is not a form and carries no body hash.

What the signature covers: the method, the URL with its query, the OAuth
parameters and a form body's parameters.  Any other body (JSON) is covered
only through ``oauth_body_hash``: without one, only TLS protects it.

Every failure raises :class:`~imgfac_twisted.errors.AuthenticationFailed`
with a message meant for the client. Messages never contain a secret, and
an unknown consumer key is reported exactly like a bad signature, so that
neither the message nor the timing (oauthlib's dummy client) tells a caller
which keys exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from oauthlib.common import CaseInsensitiveDict, Request, urldecode
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SignatureOnlyEndpoint,
)
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from imgfac_twisted.errors import AuthenticationFailed
from imgfac_twisted.web.oauth_validator import (
    ALLOWED_METHODS,
    BAD_TIMESTAMP,
    LOG_KEY,
    REPLAY,
    STALE,
    NonceMemory,
    TwoLeggedValidator,
)

__all__ = ["OAuthVerifier"]

_FORM_URLENCODED = "application/x-www-form-urlencoded"
# Longest client-supplied value echoed back in a message: enough to
# recognise it, short enough that a hostile value cannot bloat the reply.
_ECHO_LIMIT = 40

_MISSING_SIGNATURE = "missing OAuth signature: write requests must be signed with two-legged OAuth 1.0a"
_BAD_SIGNATURE = "invalid signature or unknown consumer key"
_REPLAYED = "nonce already used (replayed request)"
_TOKEN_GIVEN = "OAuth tokens are not accepted: sign with the consumer key and secret only (two-legged OAuth 1.0a)"
_BAD_TIMESTAMP_MESSAGE = "malformed timestamp: oauth_timestamp must be a 10-digit count of seconds since the epoch"
_MIXED_SOURCES = (
    "malformed OAuth request: OAuth parameters must come from exactly one of "
    "the Authorization header, the query string or the form body"
)
_DUPLICATED = "malformed OAuth request: duplicated OAuth parameters"
_MALFORMED_HEADER = "malformed OAuth Authorization header"
_MALFORMED_QUERY = "malformed query string: it cannot be parsed as application/x-www-form-urlencoded"
_MALFORMED_FORM = (
    "malformed form body: a body sent as application/x-www-form-urlencoded must be valid UTF-8 and validly URL-encoded"
)
_MALFORMED = "malformed OAuth request"
_BODY_HASH_MISMATCH = "oauth_body_hash does not match the request body (the body was changed after it was signed)"
_BODY_HASH_MISSING = (
    "oauth_body_hash missing: this daemon requires signed request bodies other than forms to carry the OAuth body hash"
)

# The body hash is made with the signature method's hash function
# (OAuth Request Body Hash, section 3.1).
_BODY_HASHES = {SIGNATURE_HMAC_SHA1: hashlib.sha1, SIGNATURE_HMAC_SHA256: hashlib.sha256}


def _echo(value: str) -> str:
    """Return a client-supplied value shortened for use in a message."""
    if len(value) > _ECHO_LIMIT:
        return value[:_ECHO_LIMIT] + "..."
    return value


class OAuthVerifier:
    """Verifies two-legged OAuth 1.0a signatures of write requests."""

    def __init__(
        self,
        clients: Mapping[str, str],
        clock: IReactorTime,
        timestamp_window: int = 300,
        known_nonces: Iterable[tuple[str, str, float]] = (),
        spent: Callable[[str, str, float], object] | None = None,
        require_body_hash: bool = False,
        shared_spend: Callable[[str, str, float], Deferred[bool]] | None = None,
    ) -> None:
        """Verify against ``clients`` (consumer key -> shared secret).

        ``clients`` is copied: later changes to the mapping have no effect.
        Timestamps more than ``timestamp_window`` seconds away from
        ``clock.seconds()`` are refused, and used nonces are remembered for
        as long as their timestamp stays inside that window.
        ``known_nonces`` are (consumer key, nonce, expiry) already spent;
        ``spent(key, nonce, expiry)`` is told of each newly spent one.
        With ``require_body_hash``, a signed request whose body is not a
        form must carry ``oauth_body_hash``.  ``shared_spend(key, nonce, expiry)``
        (several nodes on one store) records a nonce in the store every node
        shares and fires False when another node had spent it: ``verify_shared``
        then refuses the request as a replay.
        """
        self._clock = clock
        self._require_body_hash = require_body_hash
        self._window = timestamp_window
        self._spent = spent
        self._shared_spend = shared_spend
        self._nonces = NonceMemory()
        for client_key, nonce, expiry in known_nonces:
            self._nonces.remember(client_key, nonce, expiry)
        self._validator = TwoLeggedValidator(clients, clock, timestamp_window, self._nonces)
        self._endpoint = SignatureOnlyEndpoint(self._validator)

    def remembered_nonces(self) -> int:
        """Return how many used nonces are currently remembered."""
        return len(self._nonces)

    @property
    def shares_nonces(self) -> bool:
        """True when spent nonces are checked against the store shared by several nodes (``verify_shared``)."""
        return self._shared_spend is not None

    async def verify_shared(self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None) -> str:
        """``verify``, then spend the nonce in the shared store: a request replayed to another node is refused."""
        client_key, nonce, expiry = self._verified(method, uri, headers, body)
        if self._shared_spend is not None and not await self._shared_spend(client_key, nonce, expiry):
            raise AuthenticationFailed(_REPLAYED)
        return client_key

    def verify(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> str:
        """Return the consumer key of a correctly signed request; raise AuthenticationFailed(message) otherwise."""
        return self._verified(method, uri, headers, body)[0]

    def _verified(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[str, str, float]:
        """The consumer key, nonce and nonce expiry of a correctly signed request (its nonce now spent here)."""
        # Pruning here keeps memory bounded without a timer: the work is
        # proportional to what expired since the previous request.
        self._nonces.forget_expired(self._clock.seconds())

        oauth_headers, form_body = self._prepare(headers, body)
        try:
            valid, request = self._endpoint.validate_request(
                uri, http_method=method, body=form_body, headers=oauth_headers
            )
        except ValueError:
            # oauthlib lets ValueError escape for an Authorization header it
            # cannot parse (including non-OAuth schemes) and for a query
            # string that is not validly URL-encoded.
            raise AuthenticationFailed(self._unparsable_reason(oauth_headers)) from None
        if request is None:
            raise AuthenticationFailed(self._unusable_reason(uri, oauth_headers, form_body))
        if request.resource_owner_key:
            raise AuthenticationFailed(_TOKEN_GIVEN)
        if not valid:
            raise AuthenticationFailed(self._rejection_reason(request))
        self._check_body_hash(request, body, form_body is not None)

        # Only now, with the signature verified, is the nonce spent.
        expiry = int(request.timestamp) + self._window
        self._nonces.remember(request.client_key, request.nonce, expiry)
        if self._spent is not None:
            self._spent(request.client_key, request.nonce, expiry)
        client_key: str = request.client_key
        return client_key, str(request.nonce), expiry

    # -- helpers ----------------------------------------------------------

    def _check_body_hash(self, request: Request, body: bytes | None, is_form: bool) -> None:
        """Refuse a body that is not the one signed (its ``oauth_body_hash`` differs).

        The signature verified, so ``oauth_body_hash`` is the signer's own;
        what remains is to compare it with the body that arrived.  A form
        body is part of the signature itself and needs no hash, but one
        that carries a hash must match it too.
        """
        given = _oauth_params(request).get("oauth_body_hash")
        if given is None:
            if self._require_body_hash and body and not is_form:
                raise AuthenticationFailed(_BODY_HASH_MISSING)
            return
        # Bodies are capped by max_body_bytes (2 MiB by default): hashing one
        # costs about 1 ms at most (measured), on the same turn as the HMAC.
        # The signature verified, so its method is one of _BODY_HASHES'.
        digest = _BODY_HASHES[str(request.signature_method)](body or b"").digest()
        expected = base64.b64encode(digest).decode("ascii")
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("ascii")):
            raise AuthenticationFailed(_BODY_HASH_MISMATCH)

    @staticmethod
    def _prepare(headers: Mapping[str, str], body: bytes | None) -> tuple[dict[str, str], str | None]:
        """Return the headers and body to hand to oauthlib.

        The Content-Type is canonicalised: oauthlib includes the body in the
        signature only when it finds the exact lower-case media type in the
        header, whereas HTTP (and Twisted's form parser) match it without
        regard to case. Whatever the daemon will parse as a form must be
        covered by the signature, so a form body is always signed.
        """
        oauth_headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}
        content_type = CaseInsensitiveDict(dict(headers)).get("Content-Type", "")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != _FORM_URLENCODED:
            # Other bodies (JSON, images) are not part of an OAuth 1.0a
            # signature; not decoding them keeps large uploads cheap.
            return oauth_headers, None
        oauth_headers["Content-Type"] = _FORM_URLENCODED
        try:
            text = (body or b"").decode("utf-8")
            # oauthlib silently drops a form body it cannot parse from the
            # signature; refusing it instead stops unsigned parameters from
            # reaching the form parser.
            urldecode(text)
        except ValueError:
            raise AuthenticationFailed(_MALFORMED_FORM) from None
        return oauth_headers, text

    @staticmethod
    def _unparsable_reason(headers: Mapping[str, str]) -> str:
        """Say why oauthlib raised ValueError while collecting parameters."""
        authorization = CaseInsensitiveDict(dict(headers)).get("Authorization")
        if authorization is None:
            return _MALFORMED_QUERY
        if authorization[:6].lower() == "oauth ":
            return _MALFORMED_HEADER
        # Another scheme (Basic, Bearer...): the request is simply unsigned.
        return _MISSING_SIGNATURE

    @staticmethod
    def _unusable_reason(uri: str, headers: dict[str, str], form_body: str | None) -> str:
        """Say why oauthlib could not build a request from the parameters.

        oauthlib only reports "False, None" here; its three causes are no
        OAuth parameters at all, parameters in more than one place, and
        duplicated parameters, which we tell apart from the parsed sources.
        """
        sources = (
            oauth_signature.collect_parameters(headers=headers, exclude_oauth_signature=False),
            oauth_signature.collect_parameters(body=form_body, exclude_oauth_signature=False),
            oauth_signature.collect_parameters(uri_query=urlsplit(uri).query, exclude_oauth_signature=False),
        )
        with_oauth = [oauth_utils.filter_oauth_params(s) for s in sources]
        with_oauth = [params for params in with_oauth if params]
        if not with_oauth:
            return _MISSING_SIGNATURE
        if len(with_oauth) > 1:
            return _MIXED_SOURCES
        return _DUPLICATED

    def _rejection_reason(self, request: Request) -> str:
        """Say why oauthlib refused a request it could parse."""
        reason = request.validator_log.get(LOG_KEY)
        if reason == STALE:
            return f"stale timestamp: outside the {self._window} s window (check the client's clock)"
        if reason == REPLAY:
            return _REPLAYED
        if reason == BAD_TIMESTAMP:
            return _BAD_TIMESTAMP_MESSAGE
        if "signature" in request.validator_log:
            # The signature was checked: either the key is unknown or the
            # signature is wrong. One message for both, so that the reply
            # does not reveal which consumer keys exist.
            return _BAD_SIGNATURE
        # oauthlib stopped in its mandatory-parameter checks, before our
        # validator was asked anything.
        return self._parameter_reason(request)

    @staticmethod
    def _parameter_reason(request: Request) -> str:
        """Say which of oauthlib's mandatory-parameter checks failed."""
        if not request.signature:
            return _MISSING_SIGNATURE
        missing = [
            name
            for name, value in (
                ("oauth_consumer_key", request.client_key),
                ("oauth_signature_method", request.signature_method),
                ("oauth_timestamp", request.timestamp),
                ("oauth_nonce", request.nonce),
            )
            if not value
        ]
        if missing:
            return "incomplete OAuth request: missing " + ", ".join(missing)
        # All four are there (checked above): strings.
        method, timestamp = str(request.signature_method), str(request.timestamp)
        if method not in ALLOWED_METHODS:
            return f"unsupported signature method {_echo(method)} (use HMAC-SHA1 or HMAC-SHA256)"
        version = _oauth_params(request).get("oauth_version", "1.0")
        if version != "1.0":
            return f"unsupported OAuth version {_echo(version)} (use 1.0)"
        if len(timestamp) != 10 or not (timestamp.isascii() and timestamp.isdigit()):
            return _BAD_TIMESTAMP_MESSAGE
        return _MALFORMED


def _oauth_params(request: Request) -> dict[str, str]:
    """The OAuth parameters of a request oauthlib's endpoint made: a dict (types-oauthlib says a list)."""
    params: Any = request.oauth_params
    return dict(params)
