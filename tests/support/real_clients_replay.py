"""Replaying the real clients' recorded requests: their cassettes, the oauth gem's signing, answer comparison.

The cassettes (``tests/real_clients/*.json``) hold HTTP exchanges recorded
in 2011-12 by Conductor's factory client (aeolus-image-rubygem) and by
aeolus-cli against the real factory and Conductor.  ``gem_authorization``
signs as the Ruby ``oauth`` gem 0.4.4 did (written here from RFC 5849 and
the OAuth Request Body Hash draft, and checked against a recorded
``oauth_signature`` and ``oauth_body_hash``); the ``*_names`` helpers
reduce answers to what is compared with the recordings: JSON keys and
``_type``s, XML element paths.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import bcrypt
from lxml import etree

from .daemon import CLIENTS, mock_config

DATA = Path(__file__).resolve().parents[1] / "real_clients"


def cassettes(name: str) -> dict[str, Any]:
    """One client's recorded exchanges (``aeolus_image`` or ``aeolus_cli``)."""
    return json.loads((DATA / f"{name}_cassettes.json").read_text(encoding="utf-8"))


def recorded(name: str, cassette_suffix: str, method: str | None = None, index: int = 0) -> dict[str, Any]:
    """The ``index``-th exchange (of ``method``) of the cassette whose path ends with ``cassette_suffix``."""
    found = [
        x
        for x in cassettes(name)["exchanges"]
        if x["cassette"].endswith(cassette_suffix) and (method is None or x["method"] == method)
    ]
    assert found, f"no exchange {method or ''} in {cassette_suffix}"
    return found[index]


# -- the oauth gem's signature --------------------------------------------------------------


def _escape(text: str) -> str:
    """RFC 5849 percent-encoding (unreserved characters kept)."""
    return quote(text, safe="-._~")


def body_hash(body: bytes) -> str:
    """``oauth_body_hash`` for HMAC-SHA1: base64 of the body's SHA-1."""
    return base64.b64encode(hashlib.sha1(body).digest()).decode("ascii")


def gem_authorization(
    method: str, url: str, body: bytes | None, key: str, secret: str, nonce: str, timestamp: str
) -> str:
    """The ``Authorization`` header the oauth gem 0.4.4 sends (two-legged, HMAC-SHA1, body hash for non-form bodies)."""
    params = {
        "oauth_consumer_key": key,
        "oauth_nonce": nonce,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": timestamp,
        "oauth_version": "1.0",
    }
    if body is not None:
        params["oauth_body_hash"] = body_hash(body)
    parts = urlsplit(url)
    normalized_url = f"{parts.scheme}://{parts.netloc}{parts.path}"
    pairs = sorted((_escape(k), _escape(v)) for k, v in params.items())
    base = "&".join([method.upper(), _escape(normalized_url), _escape("&".join(f"{k}={v}" for k, v in pairs))])
    digest = hmac.new(f"{_escape(secret)}&".encode(), base.encode("utf-8"), hashlib.sha1).digest()
    params["oauth_signature"] = base64.b64encode(digest).decode("ascii")
    return "OAuth " + ", ".join(f'{k}="{_escape(v)}"' for k, v in sorted(params.items()))


def authorization_params(header: str) -> dict[str, str]:
    """The parameters of an ``OAuth k="v", ...`` header, still percent-encoded."""
    assert header.startswith("OAuth ")
    return {k.strip(): v.strip().strip('"') for k, v in (item.split("=", 1) for item in header[6:].split(","))}


# -- comparing answers ------------------------------------------------------------------------


def json_names(document: Any, path: str = "") -> set[str]:
    """Every key path of a JSON document, with the ``_type`` values (``build/target_images/_type=target_image``)."""
    names: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            here = f"{path}/{key}" if path else key
            names.add(f"{here}={value}" if key == "_type" else here)
            names |= json_names(value, here)
    elif isinstance(document, list):
        for item in document:
            names |= json_names(item, path)
    return names


def xml_names(text: str | bytes) -> set[str]:
    """Every element path of an XML document (``image/build/target_images/target_image/status``)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    root = etree.fromstring(data.strip())
    names: set[str] = set()

    def walk(element: etree._Element, path: str) -> None:
        here = f"{path}/{element.tag}" if path else element.tag
        names.add(here)
        for child in element:
            walk(child, here)

    walk(root, "")
    return names


# -- the daemon the recordings meet ------------------------------------------------------------

KEY, SECRET = "mock-key", "mock-secret"
CONDUCTOR_USER, CONDUCTOR_PASSWORD = "admin", "password"
MOCK_USER, MOCK_PASSWORD = "conductor-user", "mock-pass-never-shown"
MOCK_CREDENTIALS = (
    f"<provider_credentials><mock_credentials><username>{MOCK_USER}</username>"
    f"<password>{MOCK_PASSWORD}</password></mock_credentials></provider_credentials>"
)
#: Conductor's ``credentials``: its whole provider account, the factory's document inside (mock and EC2 alike).
PROVIDER_ACCOUNT = (
    "<provider_account><name>mock-acc</name><provider>mock</provider><provider_type>mock</provider_type>"
    f"{MOCK_CREDENTIALS}</provider_account>"
)


def real_clients_config(folder: Path) -> dict[str, Any]:
    """OAuth client mock-key (the rubygem spec's), the Conductor API with admin/password and a mock account."""
    (folder / "mock-acc.xml").write_text(MOCK_CREDENTIALS)
    hashed = bcrypt.hashpw(CONDUCTOR_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return mock_config(
        clients={**CLIENTS, KEY: SECRET},
        conductor=True,
        conductor_users={CONDUCTOR_USER: hashed},
        provider_accounts={"mock-acc": {"provider": "mock", "credentials": str(folder / "mock-acc.xml")}},
    )


def wrapped(root: str, **fields: str) -> bytes:
    """ActiveResource's JSON for a new record: ``{"<root>": {fields}}``."""
    return json.dumps({root: fields}, separators=(",", ":")).encode("utf-8")
