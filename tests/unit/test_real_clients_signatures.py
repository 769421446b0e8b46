"""What Conductor's factory client (aeolus-image-rubygem) recorded meets the daemon's parts without a daemon:
the oauth gem's signature reproduced byte for byte, the recorded requests through the OAuth verifier on a Clock,
ActiveResource's wrapping, Conductor's provider account as credentials (the daemon itself:
tests/integration/test_real_clients_factory.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from lxml import etree
from twisted.internet.task import Clock

from imgfac_twisted.errors import AuthenticationFailed
from imgfac_twisted.web.oauth import OAuthVerifier
from imgfac_twisted.web.params import provider_credentials, unwrapped
from support.ec2_fakes import make_provider
from support.moto_peer import credentials as ec2_credentials
from support.real_clients_replay import (
    KEY,
    MOCK_CREDENTIALS,
    MOCK_PASSWORD,
    PROVIDER_ACCOUNT,
    SECRET,
    authorization_params,
    gem_authorization,
    recorded,
)


def test_the_gems_signature_is_reproduced_byte_for_byte() -> None:
    """The recorded Authorization header (oauth_body_hash and oauth_signature) comes out of our signer unchanged."""
    exchange = recorded("aeolus_image", "oauth_success_valid.yml")
    header = exchange["request_headers"]["authorization"]
    params = authorization_params(header)
    ours = gem_authorization(
        "POST",
        "http://127.0.0.1:8075" + exchange["path"],
        exchange["request_body"].encode(),
        KEY,
        SECRET,
        unquote(params["oauth_nonce"]),
        params["oauth_timestamp"],
    )
    assert ours == header


def test_the_recorded_requests_meet_the_verifier_as_the_2011_factory_met_them() -> None:
    """At the recorded time: the valid request verifies, the wrong-secret one and a changed body are refused."""
    valid = recorded("aeolus_image", "oauth_success_valid.yml")
    wrong = recorded("aeolus_image", "oauth_fail_invalid.yml")
    clock = Clock()
    clock.advance(int(authorization_params(valid["request_headers"]["authorization"])["oauth_timestamp"]))

    def verify(exchange: dict[str, Any], body: bytes) -> str:
        verifier = OAuthVerifier({KEY: SECRET}, clock)
        return verifier.verify(
            "POST",
            "http://127.0.0.1:8075" + exchange["path"],
            {"Content-Type": "application/json", "Authorization": exchange["request_headers"]["authorization"]},
            body,
        )

    body = valid["request_body"].encode()
    assert valid["status"] == 202 and verify(valid, body) == KEY
    with pytest.raises(AuthenticationFailed, match="oauth_body_hash"):
        verify(valid, body.replace(b"Fedora 14", b"Fedora 15"))
    assert wrong["status"] == 401
    with pytest.raises(AuthenticationFailed):
        verify(wrong, wrong["request_body"].encode())


def test_oauth_require_body_hash_refuses_a_signed_json_body_without_one() -> None:
    """Off (default): a JSON body signed without oauth_body_hash passes; on: 401 naming the missing hash."""
    clock = Clock()
    clock.advance(time.time())
    url = "https://factory.example:8075/imagefactory/images"
    body = b'{"targets": "mock", "template": "x"}'
    nonce = iter(range(10))

    def signed() -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Authorization": gem_authorization(
                "POST", url, None, KEY, SECRET, f"n{next(nonce)}", str(int(clock.seconds()))
            ),
        }

    assert OAuthVerifier({KEY: SECRET}, clock).verify("POST", url, signed(), body) == KEY
    strict = OAuthVerifier({KEY: SECRET}, clock, require_body_hash=True)
    with pytest.raises(AuthenticationFailed, match="oauth_body_hash missing"):
        strict.verify("POST", url, signed(), body)
    with_hash = {
        "Content-Type": "application/json",
        "Authorization": gem_authorization("POST", url, body, KEY, SECRET, "n9", str(int(clock.seconds()))),
    }
    assert strict.verify("POST", url, with_hash, body) == KEY
    # A request without a body (DELETE) needs no hash.
    assert (
        strict.verify(
            "DELETE",
            url,
            {"Authorization": gem_authorization("DELETE", url, None, KEY, SECRET, "n8", str(int(clock.seconds())))},
            b"",
        )
        == KEY
    )


def test_activeresource_wrapping_is_unwrapped_and_nothing_else() -> None:
    """One key whose value is an object: the inner object; any other object stays as it is."""
    inner = {"targets": "ec2", "template": "<template/>"}
    assert unwrapped({"image": inner}) == inner
    assert unwrapped({"image": inner, "other": "x"}) == {"image": inner, "other": "x"}
    assert unwrapped({"targets": "ec2"}) == {"targets": "ec2"}
    assert unwrapped({"image": ["not", "an", "object"]}) == {"image": ["not", "an", "object"]}


def test_credentials_are_found_inside_conductors_provider_account(tmp_path: Path) -> None:
    """Mock and EC2 alike: the <provider_credentials> element anywhere in the document is what the provider reads."""
    mock = provider_credentials(PROVIDER_ACCOUNT)
    assert etree.fromstring(mock).tag == "provider_credentials" and MOCK_PASSWORD in mock
    ec2_account = (
        "<provider_account><name>ec2-acc</name><provider>ec2-us-east-1</provider>"
        f"<provider_type>ec2</provider_type>{ec2_credentials()}</provider_account>"
    )
    parsed = make_provider(tmp_path).parse_credentials(provider_credentials(ec2_account))
    assert parsed.account_identifier == make_provider(tmp_path).parse_credentials(ec2_credentials()).account_identifier
    assert provider_credentials(MOCK_CREDENTIALS) == MOCK_CREDENTIALS
    # Not XML, or no such element: left for the provider's parser to refuse with its own message.
    assert provider_credentials("not xml") == "not xml"
    assert provider_credentials("<provider_account/>") == "<provider_account/>"
