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
from typing import Any

import pytest
import requests
from lxml import etree

from imgfac_twisted.testing import SPEC_TEMPLATE
from support.daemon import Daemon, DaemonPool
from support.real_clients_replay import (
    CONDUCTOR_PASSWORD,
    CONDUCTOR_USER,
    KEY,
    MOCK_PASSWORD,
    MOCK_USER,
    PROVIDER_ACCOUNT,
    SECRET,
    gem_authorization,
    json_names,
    real_clients_config,
    recorded,
    wrapped,
    xml_names,
)


@pytest.fixture(scope="module")
def factory(module_daemon_factory: DaemonPool, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    return module_daemon_factory.make(
        real_clients_config(tmp_path_factory.mktemp("real_clients")), name="real_clients_factory"
    )


def gem_request(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    secret: str = SECRET,
    sent_body: bytes | None = None,
) -> requests.Response:
    """One request as the rubygem sends it: signed by the oauth gem (body hash of ``body``), JSON.

    ``sent_body`` (when given) is what travels instead of the signed body.
    """
    url = daemon.url(path)
    headers = {
        "User-Agent": "OAuth gem v0.4.4",
        "Authorization": gem_authorization(method, url, body, KEY, secret, uuid.uuid4().hex, str(int(time.time()))),
    }
    if body is not None:
        headers["Content-Type"] = "application/json"
    return daemon.request(method, path, headers=headers, data=sent_body if sent_body is not None else body)


def conductor_get(daemon: Daemon, path: str) -> etree._Element:
    answer = daemon.get(path, auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD), headers={"Accept": "application/xml"})
    assert answer.status_code == 200, answer.text
    return etree.fromstring(answer.content)


def completed(daemon: Daemon, href: str) -> dict[str, Any]:
    document = daemon.wait_final(href)
    assert document["status"] == "COMPLETED", document
    return document


# -- the oauth gem's signature, offline -------------------------------------------------------


# -- through the daemon, over TLS ------------------------------------------------------------------


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


def test_a_json_body_changed_after_signing_is_refused(factory: Daemon) -> None:
    """Same oauth_body_hash and signature, another body: 401 saying the body hash does not match."""
    exchange = recorded("aeolus_image", "oauth_success_valid.yml")
    body = exchange["request_body"].encode()
    answer = gem_request(
        factory, "POST", exchange["path"], body, sent_body=body.replace(b'"targets":"ec2"', b'"targets":"mock"')
    )
    assert answer.status_code == 401, answer.text
    assert "oauth_body_hash" in answer.json()["message"]


def test_a_wrong_secret_is_refused_as_recorded(factory: Daemon) -> None:
    """oauth_fail_invalid.yml: signed with the wrong secret, 401."""
    exchange = recorded("aeolus_image", "oauth_fail_invalid.yml")
    answer = gem_request(factory, "POST", exchange["path"], exchange["request_body"].encode(), secret="wrong-secret")
    assert answer.status_code == exchange["status"] == 401


def test_builders_listing_as_recorded(factory: Daemon) -> None:
    """builder.yml: GET /imagefactory/builders (Accept: application/json) has every recorded key."""
    exchange = recorded("aeolus_image", "builder.yml")
    gem_request(factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE))
    answer = factory.get(exchange["path"], headers={"Accept": exchange["request_headers"]["accept"]})
    assert answer.status_code == exchange["status"] == 200
    assert json_names(json.loads(exchange["response_body"])) <= json_names(answer.json())


def test_conductor_builds_one_more_target_into_the_same_build(factory: Daemon) -> None:
    """PUT /imagefactory/images/:id with build_id: the new target image is in that build; both COMPLETE."""
    first = gem_request(
        factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE)
    )
    assert first.status_code == 202, first.text
    image, build = first.json()["id"], first.json()["build"]["id"]
    completed(factory, first.json()["build"]["target_images"][0]["href"])
    more = gem_request(
        factory, "PUT", f"/imagefactory/images/{image}", wrapped("image", targets="mock", build_id=build)
    )
    assert more.status_code == 202, more.text
    assert (more.json()["id"], more.json()["build"]["id"]) == (image, build)
    (added,) = more.json()["build"]["target_images"]
    assert added["id"] != first.json()["build"]["target_images"][0]["id"]
    assert completed(factory, added["href"])["build_id"] == build
    listed = conductor_get(factory, f"/conductor/api/builds/{build}/target_images.xml")
    assert len(listed.findall("target_image")) == 2
    other = gem_request(
        factory, "PUT", f"/imagefactory/images/{image}", wrapped("image", targets="mock", build_id=str(uuid.uuid4()))
    )
    assert other.status_code == 404, other.text


def test_put_of_an_image_id_never_seen(factory: Daemon) -> None:
    """With a template the image is created under Conductor's id; without one it stays 404."""
    chosen = str(uuid.uuid4())
    made = gem_request(
        factory, "PUT", f"/imagefactory/images/{chosen}", wrapped("image", targets="mock", template=SPEC_TEMPLATE)
    )
    assert made.status_code == 202, made.text
    assert made.json()["id"] == chosen and made.json()["href"].endswith(f"/imagefactory/images/{chosen}")
    completed(factory, made.json()["build"]["target_images"][0]["href"])
    assert conductor_get(factory, f"/conductor/api/images/{chosen}.xml").get("id") == chosen
    missing = gem_request(factory, "PUT", f"/imagefactory/images/{uuid.uuid4()}", wrapped("image", targets="mock"))
    assert missing.status_code == 404, missing.text


def test_push_with_conductors_whole_provider_account_as_credentials(factory: Daemon) -> None:
    """POST /imagefactory/provider_images, wrapped, credentials = <provider_account>: pushed; the password shows nowhere."""
    built = gem_request(
        factory, "POST", "/imagefactory/images", wrapped("image", targets="mock", template=SPEC_TEMPLATE)
    )
    image, build = built.json()["id"], built.json()["build"]["id"]
    target = built.json()["build"]["target_images"][0]
    completed(factory, target["href"])
    pushed = gem_request(
        factory,
        "POST",
        "/imagefactory/provider_images",
        wrapped(
            "provider_image",
            provider="mock",
            credentials=PROVIDER_ACCOUNT,
            image_id=image,
            build_id=build,
            target_image_id=target["id"],
        ),
    )
    assert pushed.status_code == 202, pushed.text
    assert json_names(pushed.json()) == {"_type=provider_image", "id", "href"}
    document = completed(factory, pushed.json()["href"])
    assert document["provider_account_identifier"] == MOCK_USER
    shown = [
        pushed.text,
        json.dumps(document),
        factory.get(f"/imagefactory/builders/{document['id']}/log").text,
        factory.log_text(),
    ]
    assert not any(MOCK_PASSWORD in text for text in shown)


def test_import_through_the_factory_read_through_both_apis_then_delete(factory: Daemon) -> None:
    """POST /imagefactory/images with target_identifier: 200, nested; both APIs show it; DELETE leaves the AMI alone."""
    answer = gem_request(
        factory,
        "POST",
        "/imagefactory/images",
        wrapped(
            "image",
            target_name="ec2",
            provider_name="ec2-us-east-1",
            target_identifier="ami-5592553c",
            image_descriptor="<image><name>MyImage</name><description>imported</description></image>",
        ),
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert json_names(document) == {
        "_type=image",
        "id",
        "href",
        "build",
        "build/_type=build",
        "build/id",
        "build/href",
        "build/target_images",
        "build/target_images/_type=target_image",
        "build/target_images/id",
        "build/target_images/href",
        "build/target_images/provider_images",
        "build/target_images/provider_images/_type=provider_image",
        "build/target_images/provider_images/id",
        "build/target_images/provider_images/href",
    }
    target = document["build"]["target_images"][0]
    provider_image = target["provider_images"][0]
    assert factory.get_json(target["href"])["status"] == "COMPLETED"
    pushed = factory.get_json(provider_image["href"])
    assert (pushed["status"], pushed["identifier_on_provider"], pushed["provider"]) == (
        "COMPLETED",
        "ami-5592553c",
        "ec2-us-east-1",
    )
    image = conductor_get(factory, f"/conductor/api/images/{document['id']}.xml")
    assert (image.findtext("name"), image.findtext("description")) == ("MyImage", "imported")
    on_provider = conductor_get(factory, f"/conductor/api/provider_images/{provider_image['id']}.xml")
    assert on_provider.findtext("target_identifier") == "ami-5592553c"
    # Pushing an imported target image: nothing to upload.
    refused = gem_request(
        factory,
        "POST",
        "/imagefactory/provider_images",
        wrapped(
            "provider_image",
            provider="mock",
            credentials=PROVIDER_ACCOUNT,
            image_id=document["id"],
            build_id=document["build"]["id"],
            target_image_id=target["id"],
        ),
    )
    assert refused.status_code == 400 and "imported" in refused.json()["message"]
    deleted = factory.delete(
        f"/conductor/api/images/{document['id']}.xml",
        signed=False,
        auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD),
        headers={"Accept": "application/xml"},
    )
    assert deleted.status_code == 200, deleted.text
    assert "image/content/provider_content/target_identifier" in xml_names(deleted.content)
    assert etree.fromstring(deleted.content).findtext("content/provider_content/target_identifier") == "ami-5592553c"
    assert factory.get(target["href"]).status_code == 404
    assert (
        factory.get(f"/conductor/api/images/{document['id']}", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)).status_code
        == 404
    )
