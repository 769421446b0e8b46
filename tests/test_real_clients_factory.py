"""Conductor's factory client (aeolus-image-rubygem) drives the daemon as it drove the 2011 factory.

Requests are sent as that client sent them: ActiveResource's JSON, wrapped
(``{"image": {...}}``), ``Content-Type: application/json``, ``User-Agent:
OAuth gem v0.4.4`` and the oauth gem's signature with ``oauth_body_hash``
(``real_clients_replay.gem_authorization``, which reproduces a recorded
signature byte for byte).  The recorded bodies of
``tests/real_clients/aeolus_image_cassettes.json`` are sent unchanged;
answers are compared with the recorded ones by status, JSON keys and
``_type``.  The requests the cassettes do not hold (rebuild into a build,
push, import) are written as the client's code sends them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import bcrypt
import pytest
import requests
from lxml import etree
from twisted.internet.task import Clock

from daemon import CLIENTS, Daemon, DaemonPool, mock_config
from imgfac_twisted.errors import AuthenticationFailed
from imgfac_twisted.testing import SPEC_TEMPLATE
from imgfac_twisted.web.oauth import OAuthVerifier
from imgfac_twisted.web.params import provider_credentials, unwrapped
from moto_peer import credentials as ec2_credentials
from test_ec2_unit import make_provider
from real_clients_replay import authorization_params, gem_authorization, json_names, recorded, xml_names

KEY, SECRET = "mock-key", "mock-secret"
CONDUCTOR_USER, CONDUCTOR_PASSWORD = "admin", "password"
MOCK_USER, MOCK_PASSWORD = "conductor-user", "mock-pass-never-shown"
MOCK_CREDENTIALS = (f"<provider_credentials><mock_credentials><username>{MOCK_USER}</username>"
                    f"<password>{MOCK_PASSWORD}</password></mock_credentials></provider_credentials>")
#: Conductor's ``credentials``: its whole provider account, the factory's document inside (mock and EC2 alike).
PROVIDER_ACCOUNT = ("<provider_account><name>mock-acc</name><provider>mock</provider><provider_type>mock</provider_type>"
                    f"{MOCK_CREDENTIALS}</provider_account>")


def real_clients_config(folder: Path) -> dict[str, Any]:
    """OAuth client mock-key (the rubygem spec's), the Conductor API with admin/password and a mock account."""
    (folder / "mock-acc.xml").write_text(MOCK_CREDENTIALS)
    hashed = bcrypt.hashpw(CONDUCTOR_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return mock_config(clients={**CLIENTS, KEY: SECRET}, conductor=True,
                       conductor_users={CONDUCTOR_USER: hashed},
                       provider_accounts={"mock-acc": {"provider": "mock", "credentials": str(folder / "mock-acc.xml")}})


@pytest.fixture(scope="module")
def factory(module_daemon_factory: DaemonPool, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    return module_daemon_factory.make(real_clients_config(tmp_path_factory.mktemp("real_clients")),
                                      name="real_clients_factory")


def gem_request(daemon: Daemon, method: str, path: str, body: bytes | None = None, secret: str = SECRET,
                sent_body: bytes | None = None) -> requests.Response:
    """One request as the rubygem sends it: signed by the oauth gem (body hash of ``body``), JSON.

    ``sent_body`` (when given) is what travels instead of the signed body.
    """
    url = daemon.url(path)
    headers = {"User-Agent": "OAuth gem v0.4.4",
               "Authorization": gem_authorization(method, url, body, KEY, secret, uuid.uuid4().hex,
                                                  str(int(time.time())))}
    if body is not None:
        headers["Content-Type"] = "application/json"
    return daemon.request(method, path, headers=headers, data=sent_body if sent_body is not None else body)


def wrapped(root: str, **fields: str) -> bytes:
    """ActiveResource's JSON for a new record: ``{"<root>": {fields}}``."""
    return json.dumps({root: fields}, separators=(",", ":")).encode("utf-8")


def conductor_get(daemon: Daemon, path: str) -> etree._Element:
    answer = daemon.get(path, auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD), headers={"Accept": "application/xml"})
    assert answer.status_code == 200, answer.text
    return etree.fromstring(answer.content)


def completed(daemon: Daemon, href: str) -> dict[str, Any]:
    document = daemon.wait_final(href)
    assert document["status"] == "COMPLETED", document
    return document


# -- the oauth gem's signature, offline -------------------------------------------------------


def test_the_gems_signature_is_reproduced_byte_for_byte() -> None:
    """The recorded Authorization header (oauth_body_hash and oauth_signature) comes out of our signer unchanged."""
    exchange = recorded("aeolus_image", "oauth_success_valid.yml")
    header = exchange["request_headers"]["authorization"]
    params = authorization_params(header)
    ours = gem_authorization("POST", "http://127.0.0.1:8075" + exchange["path"], exchange["request_body"].encode(),
                             KEY, SECRET, unquote(params["oauth_nonce"]), params["oauth_timestamp"])
    assert ours == header


def test_the_recorded_requests_meet_the_verifier_as_the_2011_factory_met_them() -> None:
    """At the recorded time: the valid request verifies, the wrong-secret one and a changed body are refused."""
    valid = recorded("aeolus_image", "oauth_success_valid.yml")
    wrong = recorded("aeolus_image", "oauth_fail_invalid.yml")
    clock = Clock()
    clock.advance(int(authorization_params(valid["request_headers"]["authorization"])["oauth_timestamp"]))

    def verify(exchange: dict[str, Any], body: bytes) -> str:
        verifier = OAuthVerifier({KEY: SECRET}, clock)
        return verifier.verify("POST", "http://127.0.0.1:8075" + exchange["path"],
                               {"Content-Type": "application/json",
                                "Authorization": exchange["request_headers"]["authorization"]}, body)

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
        return {"Content-Type": "application/json",
                "Authorization": gem_authorization("POST", url, None, KEY, SECRET, f"n{next(nonce)}",
                                                   str(int(clock.seconds())))}

    assert OAuthVerifier({KEY: SECRET}, clock).verify("POST", url, signed(), body) == KEY
    strict = OAuthVerifier({KEY: SECRET}, clock, require_body_hash=True)
    with pytest.raises(AuthenticationFailed, match="oauth_body_hash missing"):
        strict.verify("POST", url, signed(), body)
    with_hash = {"Content-Type": "application/json",
                 "Authorization": gem_authorization("POST", url, body, KEY, SECRET, "n9", str(int(clock.seconds())))}
    assert strict.verify("POST", url, with_hash, body) == KEY
    # A request without a body (DELETE) needs no hash.
    assert strict.verify("DELETE", url, {"Authorization": gem_authorization(
        "DELETE", url, None, KEY, SECRET, "n8", str(int(clock.seconds())))}, b"") == KEY


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
    ec2_account = ("<provider_account><name>ec2-acc</name><provider>ec2-us-east-1</provider>"
                   f"<provider_type>ec2</provider_type>{ec2_credentials()}</provider_account>")
    parsed = make_provider(tmp_path).parse_credentials(provider_credentials(ec2_account))
    assert parsed.account_identifier == make_provider(tmp_path).parse_credentials(ec2_credentials()).account_identifier
    assert provider_credentials(MOCK_CREDENTIALS) == MOCK_CREDENTIALS
    # Not XML, or no such element: left for the provider's parser to refuse with its own message.
    assert provider_credentials("not xml") == "not xml"
    assert provider_credentials("<provider_account/>") == "<provider_account/>"


# -- through the daemon, over TLS ------------------------------------------------------------------


@pytest.mark.integration
def test_conductors_build_request_byte_for_byte(factory: Daemon) -> None:
    """The recorded POST /imagefactory/images (wrapped JSON, gem-signed) is 202 with the recorded keys and _types."""
    exchange = recorded("aeolus_image", "oauth_success_valid.yml")
    answer = gem_request(factory, "POST", exchange["path"], exchange["request_body"].encode())
    assert answer.status_code == exchange["status"] == 202, answer.text
    assert json_names(answer.json()) == json_names(json.loads(exchange["response_body"]))
    # The recorded template installs Fedora 14 from the internet: stop its build (the gem signs DELETE too).
    for target in answer.json()["build"]["target_images"]:
        stopped = gem_request(factory, "DELETE", f"/imagefactory/builders/{target['id']}")
        assert stopped.status_code in (202, 409), stopped.text


@pytest.mark.integration
def test_a_json_body_changed_after_signing_is_refused(factory: Daemon) -> None:
    """Same oauth_body_hash and signature, another body: 401 saying the body hash does not match."""
    exchange = recorded("aeolus_image", "oauth_success_valid.yml")
    body = exchange["request_body"].encode()
    answer = gem_request(factory, "POST", exchange["path"], body,
                         sent_body=body.replace(b'"targets":"ec2"', b'"targets":"mock"'))
    assert answer.status_code == 401, answer.text
    assert "oauth_body_hash" in answer.json()["message"]


@pytest.mark.integration
def test_a_wrong_secret_is_refused_as_recorded(factory: Daemon) -> None:
    """oauth_fail_invalid.yml: signed with the wrong secret, 401."""
    exchange = recorded("aeolus_image", "oauth_fail_invalid.yml")
    answer = gem_request(factory, "POST", exchange["path"], exchange["request_body"].encode(), secret="wrong-secret")
    assert answer.status_code == exchange["status"] == 401


@pytest.mark.integration
def test_builders_listing_as_recorded(factory: Daemon) -> None:
    """builder.yml: GET /imagefactory/builders (Accept: application/json) has every recorded key."""
    exchange = recorded("aeolus_image", "builder.yml")
    gem_request(factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE))
    answer = factory.get(exchange["path"], headers={"Accept": exchange["request_headers"]["accept"]})
    assert answer.status_code == exchange["status"] == 200
    assert json_names(json.loads(exchange["response_body"])) <= json_names(answer.json())


@pytest.mark.integration
def test_conductor_builds_one_more_target_into_the_same_build(factory: Daemon) -> None:
    """PUT /imagefactory/images/:id with build_id: the new target image is in that build; both COMPLETE."""
    first = gem_request(factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE))
    assert first.status_code == 202, first.text
    image, build = first.json()["id"], first.json()["build"]["id"]
    completed(factory, first.json()["build"]["target_images"][0]["href"])
    more = gem_request(factory, "PUT", f"/imagefactory/images/{image}",
                       wrapped("image", targets="mock", build_id=build))
    assert more.status_code == 202, more.text
    assert (more.json()["id"], more.json()["build"]["id"]) == (image, build)
    (added,) = more.json()["build"]["target_images"]
    assert added["id"] != first.json()["build"]["target_images"][0]["id"]
    assert completed(factory, added["href"])["build_id"] == build
    listed = conductor_get(factory, f"/conductor/api/builds/{build}/target_images.xml")
    assert len(listed.findall("target_image")) == 2
    other = gem_request(factory, "PUT", f"/imagefactory/images/{image}",
                        wrapped("image", targets="mock", build_id=str(uuid.uuid4())))
    assert other.status_code == 404, other.text


@pytest.mark.integration
def test_put_of_an_image_id_never_seen(factory: Daemon) -> None:
    """With a template the image is created under Conductor's id; without one it stays 404."""
    chosen = str(uuid.uuid4())
    made = gem_request(factory, "PUT", f"/imagefactory/images/{chosen}",
                       wrapped("image", targets="mock", template=SPEC_TEMPLATE))
    assert made.status_code == 202, made.text
    assert made.json()["id"] == chosen and made.json()["href"].endswith(f"/imagefactory/images/{chosen}")
    completed(factory, made.json()["build"]["target_images"][0]["href"])
    assert conductor_get(factory, f"/conductor/api/images/{chosen}.xml").get("id") == chosen
    missing = gem_request(factory, "PUT", f"/imagefactory/images/{uuid.uuid4()}", wrapped("image", targets="mock"))
    assert missing.status_code == 404, missing.text


@pytest.mark.integration
def test_push_with_conductors_whole_provider_account_as_credentials(factory: Daemon) -> None:
    """POST /imagefactory/provider_images, wrapped, credentials = <provider_account>: pushed; the password shows nowhere."""
    built = gem_request(factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE))
    image, build = built.json()["id"], built.json()["build"]["id"]
    target = built.json()["build"]["target_images"][0]
    completed(factory, target["href"])
    pushed = gem_request(factory, "POST", "/imagefactory/provider_images", wrapped(
        "provider_image", provider="mock", credentials=PROVIDER_ACCOUNT, image_id=image, build_id=build,
        target_image_id=target["id"]))
    assert pushed.status_code == 202, pushed.text
    assert json_names(pushed.json()) == {"_type=provider_image", "id", "href"}
    document = completed(factory, pushed.json()["href"])
    assert document["provider_account_identifier"] == MOCK_USER
    shown = [pushed.text, json.dumps(document), factory.get(f"/imagefactory/builders/{document['id']}/log").text,
             factory.log_text()]
    assert not any(MOCK_PASSWORD in text for text in shown)


@pytest.mark.integration
def test_import_through_the_factory_read_through_both_apis_then_delete(factory: Daemon) -> None:
    """POST /imagefactory/images with target_identifier: 200, nested; both APIs show it; DELETE leaves the AMI alone."""
    answer = gem_request(factory, "POST", "/imagefactory/images", wrapped(
        "image", target_name="ec2", provider_name="ec2-us-east-1", target_identifier="ami-5592553c",
        image_descriptor="<image><name>MyImage</name><description>imported</description></image>"))
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert json_names(document) == {
        "_type=image", "id", "href", "build", "build/_type=build", "build/id", "build/href", "build/target_images",
        "build/target_images/_type=target_image", "build/target_images/id", "build/target_images/href",
        "build/target_images/provider_images", "build/target_images/provider_images/_type=provider_image",
        "build/target_images/provider_images/id", "build/target_images/provider_images/href"}
    target = document["build"]["target_images"][0]
    provider_image = target["provider_images"][0]
    assert factory.get_json(target["href"])["status"] == "COMPLETED"
    pushed = factory.get_json(provider_image["href"])
    assert (pushed["status"], pushed["identifier_on_provider"], pushed["provider"]) == \
        ("COMPLETED", "ami-5592553c", "ec2-us-east-1")
    image = conductor_get(factory, f"/conductor/api/images/{document['id']}.xml")
    assert (image.findtext("name"), image.findtext("description")) == ("MyImage", "imported")
    on_provider = conductor_get(factory, f"/conductor/api/provider_images/{provider_image['id']}.xml")
    assert on_provider.findtext("target_identifier") == "ami-5592553c"
    # Pushing an imported target image: nothing to upload.
    refused = gem_request(factory, "POST", "/imagefactory/provider_images", wrapped(
        "provider_image", provider="mock", credentials=PROVIDER_ACCOUNT, image_id=document["id"],
        build_id=document["build"]["id"], target_image_id=target["id"]))
    assert refused.status_code == 400 and "imported" in refused.json()["message"]
    deleted = factory.delete(f"/conductor/api/images/{document['id']}.xml", signed=False,
                             auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD), headers={"Accept": "application/xml"})
    assert deleted.status_code == 200, deleted.text
    assert "image/content/provider_content/target_identifier" in xml_names(deleted.content)
    assert etree.fromstring(deleted.content).findtext("content/provider_content/target_identifier") == "ami-5592553c"
    assert factory.get(target["href"]).status_code == 404
    assert factory.get(f"/conductor/api/images/{document['id']}", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)).status_code == 404
