"""HTTP Basic authentication against bcrypt hashes (the Conductor API's users).

Users come from the config's ``conductor_users``: a user name to a bcrypt
hash as ``htpasswd -nB`` writes it (``$2y$``; the ``bcrypt`` package reads
the same hash as ``$2b$``).  bcrypt is slow on purpose (tens of milliseconds
a check), so checks run on a door, never on the reactor, and a successful
check is remembered for a short while: a client polling with the same
password pays for bcrypt once per ``cache_seconds``.  The cache holds a keyed
digest of the password, never the password.  An unknown user costs a bcrypt
check too, so the answer's timing does not tell which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from ..doors import IDoor
from ..errors import AuthenticationFailed

#: Cached successful checks at most (oldest dropped first).
MAX_CACHED = 1024


def _bcrypt_form(hashed: str) -> bytes:
    """``hashed`` as the bcrypt package reads it (``$2y$`` is the same algorithm as ``$2b$``)."""
    if hashed.startswith("$2y$"):
        hashed = "$2b$" + hashed[4:]
    return hashed.encode("ascii")


def parse_basic(header: bytes | None) -> tuple[str, str]:
    """User name and password of an ``Authorization: Basic ...`` header; AuthenticationFailed when there is none."""
    if not header:
        raise AuthenticationFailed("this API needs HTTP Basic authentication (user name and password)")
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise AuthenticationFailed("this API takes HTTP Basic authentication only")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed("the Basic credentials are not valid base64") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    user, colon, password = text.partition(":")
    if not colon:
        raise AuthenticationFailed("the Basic credentials must be user:password")
    return user, password


_dummy_hashes: dict[int, bytes] = {}


def _checked(password: bytes, hashed: bytes | None, cost: int) -> bool:
    """bcrypt's verdict (blocking: run it on a door).

    ``hashed`` None (an unknown user) checks against a throw-away hash of
    the users' cost, so that it takes as long, and answers False.
    """
    # Imported here: only a daemon serving the Conductor API needs bcrypt.
    import bcrypt

    if hashed is None:
        if cost not in _dummy_hashes:
            _dummy_hashes[cost] = bcrypt.hashpw(os.urandom(16).hex().encode("ascii"), bcrypt.gensalt(rounds=cost))
        bcrypt.checkpw(password, _dummy_hashes[cost])
        return False
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


class BasicAuthenticator:
    """Checks Basic credentials against the configured users' bcrypt hashes, off the reactor."""

    def __init__(self, users: Mapping[str, str], door: IDoor, clock: IReactorTime, cache_seconds: float = 60.0) -> None:
        self._hashes = {user: _bcrypt_form(hashed) for user, hashed in users.items()}
        costs = [int(hashed[4:6]) for hashed in self._hashes.values() if hashed[4:6].isdigit()]
        self._cost = max(4, min(costs)) if costs else 10
        self._door = door
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache_key = os.urandom(32)
        #: keyed digest of (user, password) -> when the successful check expires
        self._recent: dict[bytes, float] = {}

    def recently_checked(self, header: bytes | None) -> str | None:
        """The user name when these credentials passed a check within ``cache_seconds``; None otherwise.

        No bcrypt, no Deferred: what a polling client's every request costs.
        """
        try:
            user, password = parse_basic(header)
        except AuthenticationFailed:
            return None
        return user if self._remembered(self._key(user, password), user) else None

    def _key(self, user: str, password: str) -> bytes:
        return hmac.new(
            self._cache_key, user.encode("utf-8") + b"\0" + password.encode("utf-8"), hashlib.sha256
        ).digest()

    def _remembered(self, key: bytes, user: str) -> bool:
        expires = self._recent.get(key)
        return expires is not None and expires > self._clock.seconds() and user in self._hashes

    def authenticate(self, header: bytes | None) -> Deferred[str]:
        """Fire with the user name, or fail with AuthenticationFailed (never saying which part was wrong)."""
        try:
            user, password = parse_basic(header)
        except AuthenticationFailed as error:
            return fail(error)
        key = self._key(user, password)
        if self._remembered(key, user):
            return succeed(user)
        hashed = self._hashes.get(user)
        checking = self._door.run(_checked, password.encode("utf-8"), hashed, self._cost)

        def verdict(good: bool) -> str:
            if not good or user not in self._hashes:
                raise AuthenticationFailed("wrong user name or password")
            self._remember(key, self._clock.seconds() + self._cache_seconds)
            return user

        return checking.addCallback(verdict)

    def _remember(self, key: bytes, expires: float) -> None:
        if len(self._recent) >= MAX_CACHED:
            now = self._clock.seconds()
            for stale in [k for k, until in self._recent.items() if until <= now] or [next(iter(self._recent))]:
                del self._recent[stale]
        self._recent[key] = expires
