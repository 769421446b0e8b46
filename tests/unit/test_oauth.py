"""Tests for imgfac_twisted.web.oauth: two-legged OAuth 1.0a verification.

Requests are signed by requests-oauthlib, an independent client, so these
tests check interoperability and not only self-consistency. Timestamps come
from a twisted.internet.task.Clock set to the real time, and the same clock
drives the verifier.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import pytest
import requests
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SIGNATURE_HMAC_SHA512,
    SIGNATURE_PLAINTEXT,
)
from requests_oauthlib import OAuth1
from twisted.internet.task import Clock

from imgfac_twisted.errors import AuthenticationFailed
from imgfac_twisted.web.oauth import OAuthVerifier

WINDOW = 300
URL = "https://factory.example.com:8075/imagefactory/base_images"
CLIENTS = {
    "client1": "secret-one",
    "a": "short-key-secret",
    "weird key/with:chars-é": "weird-secret",
}


@pytest.fixture
def clock() -> Clock:
    """A controllable clock starting at the real current time."""
    c = Clock()
    c.advance(time.time())
    return c


@pytest.fixture
def verifier(clock: Clock) -> OAuthVerifier:
    """A verifier for CLIENTS driven by the test clock."""
    return OAuthVerifier(CLIENTS, clock, timestamp_window=WINDOW)


def sign(
    clock: Clock,
    key: str = "client1",
    secret: str | None = None,
    *,
    method: str = "POST",
    url: str = URL,
    data: Any = None,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    signature_method: str = SIGNATURE_HMAC_SHA1,
    signature_type: str = "auth_header",
    timestamp: int | None = None,
    nonce: str | None = None,
    **oauth_kwargs: Any,
) -> tuple[str, str, dict[str, str], bytes | None]:
    """Sign a request with requests-oauthlib; return verify()'s arguments.

    The timestamp defaults to the test clock's time (not the real time), so
    tests that advance the clock still produce fresh requests.
    """
    if secret is None:
        secret = CLIENTS[key]
    if timestamp is None:
        timestamp = int(clock.seconds())
    prepared = requests.Request(method, url, data=data, json=json, headers=dict(headers or {})).prepare()
    auth_kwargs: dict[str, Any] = {"timestamp": str(timestamp)}
    if nonce is not None:
        auth_kwargs["nonce"] = nonce
    auth_kwargs.update(oauth_kwargs)
    auth = OAuth1(
        key,
        client_secret=secret,
        signature_method=signature_method,
        signature_type=signature_type,
        **auth_kwargs,
    )
    signed = auth(prepared)
    out_headers = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in signed.headers.items()
    }
    body = signed.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    return signed.method, signed.url, out_headers, body


def failure(verifier: OAuthVerifier, request: tuple[Any, ...]) -> str:
    """Verify a request that must fail; return the failure message."""
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(*request)
    return info.value.message


# -- accepted requests ----------------------------------------------------


@pytest.mark.parametrize("signature_method", [SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256])
def test_hmac_methods_pass(verifier: OAuthVerifier, clock: Clock, signature_method: str) -> None:
    """HMAC-SHA1 and HMAC-SHA256 signed requests verify and name their key."""
    request = sign(clock, signature_method=signature_method)
    assert verifier.verify(*request) == "client1"


@pytest.mark.parametrize("key", ["client1", "a", "weird key/with:chars-é"])
def test_keys_of_any_length_and_alphabet_pass(verifier: OAuthVerifier, clock: Clock, key: str) -> None:
    """Consumer keys are not subject to oauthlib's length/alphabet rules."""
    assert verifier.verify(*sign(clock, key)) == key


@pytest.mark.parametrize("nonce", ["n", "nonce with spaces/and:punctuation-é", "x" * 200])
def test_nonces_of_any_length_and_alphabet_pass(verifier: OAuthVerifier, clock: Clock, nonce: str) -> None:
    """Nonces are not subject to oauthlib's length/alphabet rules."""
    assert verifier.verify(*sign(clock, nonce=nonce)) == "client1"


def test_plain_http_uri_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """enforce_ssl is off: a request to an http:// URI verifies (--no_ssl)."""
    request = sign(clock, url="http://localhost:8075/imagefactory/images")
    assert verifier.verify(*request) == "client1"


def test_json_body_signed_without_body_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """A JSON body is not part of the signature and the request verifies."""
    request = sign(clock, json={"base_image": {"template": "<template/>"}})
    assert request[2]["Content-Type"] == "application/json"
    assert verifier.verify(*request) == "client1"


def test_form_body_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """A form-encoded body signed with its parameters verifies."""
    request = sign(clock, data={"template": "<template/>", "x": "1"})
    assert verifier.verify(*request) == "client1"


def test_query_signature_type_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """OAuth parameters carried in the query string are accepted."""
    request = sign(clock, signature_type="query")
    assert "Authorization" not in request[2]
    assert "oauth_signature=" in request[1]
    assert verifier.verify(*request) == "client1"


def test_body_signature_type_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """OAuth parameters carried in a form body are accepted."""
    request = sign(clock, data={"x": "1"}, signature_type="body")
    assert b"oauth_signature=" in request[3]
    assert verifier.verify(*request) == "client1"


def test_clock_not_time_time_is_the_authority(verifier: OAuthVerifier, clock: Clock) -> None:
    """A request fresh by the injected clock passes though time.time() disagrees.

    oauthlib's own 600 s check against time.time() must be neutralised.
    """
    clock.advance(3600)
    assert verifier.verify(*sign(clock)) == "client1"


def test_timestamp_at_window_edge_passes(verifier: OAuthVerifier, clock: Clock) -> None:
    """A timestamp exactly timestamp_window seconds old is still accepted."""
    clock.rightNow = float(math.ceil(clock.rightNow))  # no fractional second
    request = sign(clock, timestamp=int(clock.seconds()) - WINDOW)
    assert verifier.verify(*request) == "client1"


# -- body and query are covered by the signature --------------------------


def test_tampered_form_body_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """Form body parameters are in the signature: changing the body fails."""
    method, url, headers, body = sign(clock, data={"template": "<good/>"})
    assert body is not None
    tampered = body.replace(b"good", b"evil")
    assert tampered != body
    message = failure(verifier, (method, url, headers, tampered))
    assert message == "invalid signature or unknown consumer key"


def test_form_body_with_upper_case_content_type_is_signed(verifier: OAuthVerifier, clock: Clock) -> None:
    """A form body is always in the signature, whatever the case of its Content-Type.

    requests-oauthlib matches the media type case-sensitively and so signs
    this body-less; the daemon would still parse the body as a form, so the
    verifier must refuse it rather than let unsigned parameters through.
    """
    request = sign(
        clock,
        data="template=%3Cevil%2F%3E",
        headers={"Content-Type": "Application/X-WWW-Form-Urlencoded"},
    )
    assert "invalid signature" in failure(verifier, request)


def test_unparsable_form_body_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """A form body oauthlib could not parse (and would drop) is refused."""
    method, url, headers, _ = sign(clock)
    headers = dict(headers, **{"Content-Type": "application/x-www-form-urlencoded"})
    message = failure(verifier, (method, url, headers, b"template=<evil/> x"))
    assert message.startswith("malformed form body")


def test_tampered_query_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """Query-string parameters are in the signature: changing them fails."""
    method, url, headers, body = sign(clock, url=URL + "?image=1&x=y")
    message = failure(verifier, (method, url.replace("image=1", "image=2"), headers, body))
    assert "invalid signature" in message


def test_tampered_path_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """The request path is in the signature: another path fails."""
    method, url, headers, body = sign(clock)
    message = failure(verifier, (method, url.replace("base_images", "images"), headers, body))
    assert "invalid signature" in message


def test_tampered_method_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """The HTTP method is in the signature: another method fails."""
    _, url, headers, body = sign(clock)
    assert "invalid signature" in failure(verifier, ("DELETE", url, headers, body))


# -- refused credentials and methods -------------------------------------


def test_wrong_secret_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """A signature made with the wrong secret fails, naming no secret."""
    message = failure(verifier, sign(clock, secret="not-the-secret"))
    assert message == "invalid signature or unknown consumer key"
    for secret in CLIENTS.values():
        assert secret not in message
    assert "not-the-secret" not in message


def test_unknown_key_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """An unknown consumer key fails, with the same message as a bad signature."""
    message = failure(verifier, sign(clock, "intruder", secret="whatever"))
    assert message == "invalid signature or unknown consumer key"


def test_unknown_key_cannot_use_dummy_client(verifier: OAuthVerifier, clock: Clock) -> None:
    """The dummy client oauthlib substitutes for unknown keys never verifies."""
    message = failure(verifier, sign(clock, "imgfac-dummy-client", secret=""))
    assert message == "invalid signature or unknown consumer key"


def test_unsigned_request_fails(verifier: OAuthVerifier) -> None:
    """A request without any OAuth parameter fails with the 'missing' message."""
    message = failure(verifier, ("POST", URL, {"Content-Type": "application/json"}, b"{}"))
    assert message == ("missing OAuth signature: write requests must be signed with two-legged OAuth 1.0a")


def test_other_authorization_scheme_fails(verifier: OAuthVerifier) -> None:
    """A request with Basic authorization is reported as unsigned."""
    headers = {"Authorization": "Basic Y2xpZW50MTpzZWNyZXQ="}
    assert failure(verifier, ("POST", URL, headers, None)).startswith("missing OAuth signature")


def test_plaintext_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """PLAINTEXT signatures are refused even with the right secret."""
    message = failure(verifier, sign(clock, signature_method=SIGNATURE_PLAINTEXT))
    assert message == "unsupported signature method PLAINTEXT (use HMAC-SHA1 or HMAC-SHA256)"
    assert CLIENTS["client1"] not in message


def test_hmac_sha512_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """Only HMAC-SHA1 and HMAC-SHA256 are accepted, not HMAC-SHA512."""
    message = failure(verifier, sign(clock, signature_method=SIGNATURE_HMAC_SHA512))
    assert message.startswith("unsupported signature method HMAC-SHA512")


def test_token_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """Three-legged requests (with an oauth_token) are refused."""
    message = failure(
        verifier,
        sign(clock, resource_owner_key="token", resource_owner_secret=""),
    )
    assert message.startswith("OAuth tokens are not accepted")


def test_missing_signature_parameter_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """An Authorization header without oauth_signature is reported as unsigned."""
    method, url, headers, body = sign(clock)
    auth = ", ".join(part for part in headers["Authorization"].split(", ") if not part.startswith("oauth_signature="))
    message = failure(verifier, (method, url, dict(headers, Authorization=auth), body))
    assert message.startswith("missing OAuth signature")


def test_parameters_in_two_places_fail(verifier: OAuthVerifier, clock: Clock) -> None:
    """OAuth parameters split between header and query string are refused."""
    method, url, headers, body = sign(clock)
    message = failure(verifier, (method, url + "?oauth_nonce=x", headers, body))
    assert message.startswith("malformed OAuth request")


# -- replay and nonces ----------------------------------------------------


def test_replay_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """The first use of a signed request passes; an identical replay fails."""
    request = sign(clock)
    assert verifier.verify(*request) == "client1"
    assert failure(verifier, request) == "nonce already used (replayed request)"


def test_spent_nonces_are_handed_on_and_known_ones_refused(clock: Clock) -> None:
    """Each verified request's nonce goes to ``spent`` (forged ones do not); a verifier that starts with it refuses it."""
    spent: list[tuple[str, str, float]] = []
    first = OAuthVerifier(CLIENTS, clock, timestamp_window=WINDOW, spent=lambda *nonce: spent.append(nonce))
    request = sign(clock, nonce="n-1")
    assert "invalid signature" in failure(first, sign(clock, secret="forger", nonce="n-2"))
    assert first.verify(*request) == "client1"
    assert spent == [("client1", "n-1", int(clock.seconds()) + WINDOW)]
    after_restart = OAuthVerifier(CLIENTS, clock, timestamp_window=WINDOW, known_nonces=spent)
    assert failure(after_restart, request) == "nonce already used (replayed request)"
    clock.advance(WINDOW + 1)
    assert after_restart.verify(*sign(clock, nonce="n-1")) == "client1", "forgotten once expired"


def test_same_nonce_other_key_is_not_a_replay(verifier: OAuthVerifier, clock: Clock) -> None:
    """Nonces are remembered per consumer key."""
    assert verifier.verify(*sign(clock, "client1", nonce="shared")) == "client1"
    assert verifier.verify(*sign(clock, "a", nonce="shared")) == "a"


def test_bad_signature_does_not_burn_nonce(verifier: OAuthVerifier, clock: Clock) -> None:
    """A forged request does not spend the nonce of a later genuine one."""
    now = int(clock.seconds())
    forged = sign(clock, secret="forger", nonce="n-123", timestamp=now)
    assert "invalid signature" in failure(verifier, forged)
    assert verifier.remembered_nonces() == 0
    genuine = sign(clock, nonce="n-123", timestamp=now)
    assert verifier.verify(*genuine) == "client1"
    assert failure(verifier, genuine) == "nonce already used (replayed request)"


def test_unknown_key_does_not_burn_nonce(verifier: OAuthVerifier, clock: Clock) -> None:
    """A request with an unknown key records nothing."""
    failure(verifier, sign(clock, "intruder", secret="x", nonce="n"))
    assert verifier.remembered_nonces() == 0


def test_nonce_memory_is_bounded(verifier: OAuthVerifier, clock: Clock) -> None:
    """Nonces whose timestamp left the window are forgotten on later verifies."""
    for _ in range(25):
        verifier.verify(*sign(clock))
    assert verifier.remembered_nonces() == 25
    clock.advance(WINDOW + 2)
    verifier.verify(*sign(clock))
    assert verifier.remembered_nonces() == 1


def test_nonce_kept_while_timestamp_in_window(verifier: OAuthVerifier, clock: Clock) -> None:
    """A nonce is remembered for as long as its timestamp could be accepted."""
    request = sign(clock)
    verifier.verify(*request)
    clock.advance(WINDOW - 1)
    assert failure(verifier, request) == "nonce already used (replayed request)"
    assert verifier.remembered_nonces() == 1


def test_future_nonce_kept_until_its_timestamp_leaves_window(verifier: OAuthVerifier, clock: Clock) -> None:
    """A request dated in the future is remembered past now + window."""
    request = sign(clock, timestamp=int(clock.seconds()) + WINDOW - 10)
    verifier.verify(*request)
    clock.advance(WINDOW + 5)  # request's timestamp is still within the window
    assert failure(verifier, request) == "nonce already used (replayed request)"
    clock.advance(WINDOW)
    verifier.verify(*sign(clock))
    assert verifier.remembered_nonces() == 1


# -- timestamps -----------------------------------------------------------


def test_stale_timestamp_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """A timestamp 1000 s in the past fails with the stale message."""
    request = sign(clock, timestamp=int(clock.seconds()) - 1000)
    message = failure(verifier, request)
    assert message.startswith("stale timestamp: outside the 300 s window")


def test_future_timestamp_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """A timestamp beyond the window in the future fails with the stale message."""
    request = sign(clock, timestamp=int(clock.seconds()) + WINDOW + 60)
    assert failure(verifier, request).startswith("stale timestamp")


def test_request_goes_stale_as_clock_advances(verifier: OAuthVerifier, clock: Clock) -> None:
    """A signed request not used within the window is refused as stale."""
    request = sign(clock)
    clock.advance(WINDOW + 1)
    assert failure(verifier, request).startswith("stale timestamp")


def test_stale_request_does_not_burn_nonce(verifier: OAuthVerifier, clock: Clock) -> None:
    """A refused stale request leaves no nonce behind."""
    failure(verifier, sign(clock, timestamp=int(clock.seconds()) - 1000))
    assert verifier.remembered_nonces() == 0


def test_custom_window(clock: Clock) -> None:
    """timestamp_window is honoured and named in the stale message."""
    verifier = OAuthVerifier(CLIENTS, clock, timestamp_window=30)
    assert verifier.verify(*sign(clock, timestamp=int(clock.seconds()) - 20)) == "client1"
    message = failure(verifier, sign(clock, timestamp=int(clock.seconds()) - 40))
    assert message.startswith("stale timestamp: outside the 30 s window")


def test_malformed_timestamp_fails(verifier: OAuthVerifier, clock: Clock) -> None:
    """A timestamp that is not a 10-digit number fails with a clear message."""
    message = failure(verifier, sign(clock, timestamp=12345))
    assert message.startswith("malformed timestamp")


def test_clients_mapping_is_copied(clock: Clock) -> None:
    """Changing the mapping after construction does not change the verifier."""
    clients = dict(CLIENTS)
    verifier = OAuthVerifier(clients, clock)
    clients["client1"] = "changed"
    assert verifier.verify(*sign(clock)) == "client1"
