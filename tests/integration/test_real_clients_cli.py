"""aeolus-cli drives the daemon's Conductor API as it drove the real Conductor (2011-12).

Every exchange of ``tests/real_clients/aeolus_cli_cassettes.json`` is sent
as recorded: method, path with ActiveResource's ``.xml``, headers (with
``Accept_language`` spelled as Net::HTTP writes ActiveResource's
``ACCEPT_LANGUAGE``), Basic auth, body byte for byte; only the recorded
ids are swapped for ids of objects this daemon made.  Answers are compared
with the recordings: status code, XML element names (every recorded
element path must be there) and error codes.  ``DIFFERENCES`` lists, per
cassette, where this daemon answers otherwise, and why.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from lxml import etree

from support.daemon import Daemon, DaemonPool
from support.real_clients_replay import (
    CONDUCTOR_PASSWORD,
    CONDUCTOR_USER,
    cassettes,
    real_clients_config,
    recorded,
    xml_names,
)

#: cassette -> (status this daemon answers, recorded element paths it does not send, why).
DIFFERENCES: dict[str, tuple[int | None, set[str], str]] = {
    "build.yml": (
        201,
        set(),
        "a created image is 201 Created with a Location (this API's documented answer); ActiveResource takes any 2xx",
    ),
    "multiple_build.yml": (201, set(), "as build.yml"),
    "build_url.yml": (201, set(), "as build.yml"),
    "import_image_default.yml": (201, set(), "as a created image"),
    "import_image_description_file.yml": (
        400,
        {"*"},
        "the recorded client sent a file name as image_descriptor; an image_descriptor must be an <image> XML document",
    ),
    "multiple_push_build_id.yml": (
        201,
        set(),
        "created provider images are 201; the recorded client named "
        "mock-acc twice and got two pushes, here an account is pushed to once",
    ),
    "multiple_push_image_id.yml": (201, set(), "as above"),
    "multiple_push_target_image_id.yml": (201, set(), "created provider images are 201"),
    "list_all_target_images_for_build.yml": (
        None,
        {"target_images/target_image/provider_image"},
        "the real Conductor misspelled <provider_images> in this listing",
    ),
    "list_all_accounts.yml": (
        None,
        {
            "provider_accounts/provider_account/provider_credentials",
            "provider_accounts/provider_account/provider_credentials/ec2_credentials",
            *(
                f"provider_accounts/provider_account/provider_credentials/ec2_credentials/{n}"
                for n in ("access_key", "account_number", "certificate", "key", "secret_access_key")
            ),
        },
        "credentials are never returned",
    ),
}

MOCK_TDL_BODY = recorded("aeolus_cli", "build_command/build.yml")["request_body"].replace(
    "<targets>ec2</targets>", "<targets>mock</targets>"
)


@pytest.fixture(scope="module")
def conductor(module_daemon_factory: DaemonPool, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    return module_daemon_factory.make(
        real_clients_config(tmp_path_factory.mktemp("real_clients_cli")), name="real_clients_cli"
    )


def send(
    daemon: Daemon,
    exchange: dict[str, Any],
    ids: dict[str, str] | None = None,
    body: str | None = None,
    password: str = CONDUCTOR_PASSWORD,
) -> requests.Response:
    """The recorded request, its recorded ids swapped for ``ids`` (recorded id -> ours), as Net::HTTP sends it."""
    path, body = exchange["path"], body if body is not None else exchange["request_body"]
    for theirs, ours in (ids or {}).items():
        path = path.replace(theirs, ours)
        body = body.replace(theirs, ours) if body else body
    headers = {
        ("Accept_language" if name == "accept-language" else name.title()): value
        for name, value in exchange["request_headers"].items()
    }
    return daemon.request(
        exchange["method"],
        path,
        auth=(CONDUCTOR_USER, password),
        headers=headers,
        data=body.encode("utf-8") if body else None,
        timeout=30,
    )


def like_recorded(answer: requests.Response, exchange: dict[str, Any]) -> etree._Element | None:
    """Assert the answer is the recorded one (status, element names), but for the listed DIFFERENCES."""
    name = exchange["cassette"].rsplit("/", 1)[1]
    status, missing, _ = DIFFERENCES.get(name, (None, set(), ""))
    assert answer.status_code == (status or exchange["status"]), f"{name}: {answer.status_code} {answer.text}"
    assert answer.headers["content-type"] == "application/xml; charset=utf-8"
    if missing == {"*"} or not (exchange["response_body"] or "").strip():
        return etree.fromstring(answer.content)
    assert xml_names(exchange["response_body"]) - xml_names(answer.content) == missing, answer.text
    document = etree.fromstring(answer.content)
    if document.tag == "error":
        assert document.findtext("code") == etree.fromstring(exchange["response_body"].encode()).findtext("code")
    return document


def wait_final(daemon: Daemon, path: str, timeout: float = 30.0) -> etree._Element:
    deadline = time.monotonic() + timeout
    while True:
        answer = daemon.get(path, auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD), headers={"Accept": "application/xml"})
        document = etree.fromstring(answer.content)
        if document.findtext("status") in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            assert document.findtext("status") == "COMPLETED", answer.text
            return document
        time.sleep(0.1)


def build_mock(daemon: Daemon) -> dict[str, str]:
    """An image built for mock through build.yml's request (targets mock), COMPLETED, pushed to mock-acc."""
    exchange = recorded("aeolus_cli", "build_command/build.yml")
    image = like_recorded(send(daemon, exchange, body=MOCK_TDL_BODY), exchange)
    target = image.find("build/target_images/target_image")
    wait_final(daemon, f"/conductor/api/target_images/{target.get('id')}.xml")
    push = recorded("aeolus_cli", "multiple_push_target_image_id.yml")
    started = like_recorded(send(daemon, push, {"e6176811-49e0-4dba-8b76-06b552a4b3a4": target.get("id")}), push)
    provider_image = started.find("provider_image")
    assert (provider_image.findtext("provider"), provider_image.findtext("account")) == ("mock", "mock-acc")
    done = wait_final(daemon, f"/conductor/api/provider_images/{provider_image.get('id')}.xml")
    return {
        "image": image.get("id"),
        "build": image.find("build").get("id"),
        "target_image": target.get("id"),
        "provider_image": provider_image.get("id"),
        "identifier": done.findtext("target_identifier"),
    }


@pytest.mark.parametrize(
    "cassette, targets", [("build.yml", ["ec2"]), ("multiple_build.yml", ["ec2", "mock"]), ("build_url.yml", ["ec2"])]
)
def test_builds_byte_for_byte(conductor: Daemon, cassette: str, targets: list[str]) -> None:
    """build cassettes: the recorded POST images.xml (escaped TDL, Accept_language) is created; then deleted."""
    exchange = recorded("aeolus_cli", f"build_command/{cassette}")
    image = like_recorded(send(conductor, exchange), exchange)
    assert [t.findtext("target") for t in image.findall("build/target_images/target_image")] == targets
    # The recorded templates install Fedora 14 from the internet: the deletion stops those builds.
    deleted = conductor.delete(
        f"/conductor/api/images/{image.get('id')}.xml",
        signed=False,
        auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD),
        headers={"Accept": "application/xml"},
    )
    assert deleted.status_code == 200 and etree.fromstring(deleted.content).find("content") is not None


def test_push_status_and_listings(conductor: Daemon) -> None:
    """push, status and list cassettes: each recorded request, on this daemon's objects, answers as recorded."""
    made = build_mock(conductor)
    for cassette, recorded_id, ours in (
        ("multiple_push_build_id.yml", "661ee541-6db3-4d36-9b3c-8972d6e63c94", "build"),
        ("multiple_push_image_id.yml", "b4b340dc-0efc-4830-8c59-411c9a3e0aba", "image"),
    ):
        exchange = recorded("aeolus_cli", cassette)
        pushes = like_recorded(send(conductor, exchange, {recorded_id: made[ours]}), exchange)
        assert [p.findtext("account") for p in pushes] == ["mock-acc"]
    reads = {
        "status_command/targetimage.yml": {"3a105ed3-20e6-410a-815d-f0ac756f2473": made["target_image"]},
        "status_command/providerimage.yml": {"1ad1ca1d-d6d8-4892-a255-c4d49c03ed9b": made["provider_image"]},
        "list_command/list_all_images.yml": {},
        "list_command/default_environment.yml": {},
        "list_command/test_cloud_environment.yml": {},
        "list_command/list_all_builds_for_image.yml": {"7e6d409b-11d5-446d-99e8-656deb4f28ca": made["image"]},
        "list_command/list_all_target_images_for_build.yml": {"3eeb6c8f-9dd0-4a5b-bd13-e96daef435f9": made["build"]},
        "list_command/list_all_providers.yml": {},
        "list_command/list_all_targets.yml": {},
        "list_command/list_all_accounts.yml": {},
    }
    for cassette, ids in reads.items():
        for exchange in [x for x in cassettes("aeolus_cli")["exchanges"] if x["cassette"].endswith(cassette)]:
            like_recorded(send(conductor, exchange, ids), exchange)
    listing = recorded("aeolus_cli", "list_all_provider_images_for_target_image.yml")
    provider_images = like_recorded(
        send(conductor, listing, {"d7cab2b2-eeb8-459e-b739-a1844a5d5a62": made["target_image"]}), listing
    )
    assert made["provider_image"] in [p.get("id") for p in provider_images]
    default = send(conductor, recorded("aeolus_cli", "default_environment.yml"))
    assert {i.findtext("environment") for i in etree.fromstring(default.content)} == {"default"}
    assert len(etree.fromstring(send(conductor, recorded("aeolus_cli", "test_cloud_environment.yml")).content)) == 0
    types = etree.fromstring(send(conductor, recorded("aeolus_cli", "list_all_targets.yml")).content)
    assert {"mock", "ec2"} <= {t.findtext("deltacloud_driver") for t in types}


def test_wrong_password_as_recorded(conductor: Daemon) -> None:
    """base_command/invalid_credentials.yml: 401."""
    exchange = recorded("aeolus_cli", "invalid_credentials.yml")
    assert send(conductor, exchange, password="wrong_password").status_code == exchange["status"] == 401


@pytest.mark.parametrize("level", ["provider_image", "target_image", "build", "image"])
def test_deletes_as_recorded(conductor: Daemon, level: str) -> None:
    """delete_command: GET then DELETE of each level, .xml; <content> lists the mock image; a missing id is 404."""
    made = build_mock(conductor)
    exchanges = [x for x in cassettes("aeolus_cli")["exchanges"] if x["cassette"].endswith(f"delete_{level}.yml")]
    recorded_id = exchanges[0]["path"].rsplit("/", 1)[1].removesuffix(".xml")
    for exchange in exchanges:
        document = like_recorded(send(conductor, exchange, {recorded_id: made[level]}), exchange)
    assert document.findtext("content/provider_content/target_identifier") == made["identifier"]
    assert document.findtext("content/provider_content/provider") == "mock"
    missing = recorded("aeolus_cli", f"delete_{level}_not_found.yml")
    like_recorded(send(conductor, missing), missing)
    gone = conductor.get(f"/conductor/api/{level}s/{made[level]}.xml", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD))
    assert gone.status_code == 404


def test_delete_of_an_image_without_provider_content(conductor: Daemon) -> None:
    """delete_image_no_provider_content.yml: an image never pushed answers an empty <content>."""
    exchange = recorded("aeolus_cli", "delete_image_no_provider_content.yml")
    built = like_recorded(
        send(conductor, recorded("aeolus_cli", "build_command/build.yml"), body=MOCK_TDL_BODY),
        recorded("aeolus_cli", "build_command/build.yml"),
    )
    document = like_recorded(
        send(conductor, exchange, {"5f32b61f-1aad-495e-8ad7-45783ee802c5": built.get("id")}), exchange
    )
    assert document.find("content") is not None and len(document.find("content")) == 0


def test_imports_of_2011_and_2012_then_reads_through_both_apis_then_delete(conductor: Daemon) -> None:
    """import cassettes (2011 form, byte for byte) and the 2012 form (provider account): read back, deleted."""
    exchange = recorded("aeolus_cli", "import_image_default.yml")
    imported = like_recorded(send(conductor, exchange), exchange)
    provider_image = imported.find("build/target_images/target_image/provider_images/provider_image")
    assert provider_image.findtext("status") == "COMPLETED"
    shown = conductor.get(
        f"/conductor/api/provider_images/{provider_image.get('id')}.xml", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)
    )
    assert etree.fromstring(shown.content).findtext("target_identifier") == "ami-5592553c"
    target_image_id = imported.find("build/target_images/target_image").get("id")
    factory = conductor.get_json(
        f"/imagefactory/images/{imported.get('id')}/builds/{imported.find('build').get('id')}"
        f"/target_images/{target_image_id}/provider_images/{provider_image.get('id')}"
    )
    assert (factory["identifier_on_provider"], factory["provider"]) == ("ami-5592553c", "ec2-us-east-1")
    name = etree.fromstring(
        conductor.get(
            f"/conductor/api/images/{imported.get('id')}.xml", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)
        ).content
    ).findtext("name")
    assert name == "MyImage"

    described = recorded("aeolus_cli", "import_image_description_file.yml")
    refused = like_recorded(send(conductor, described), described)
    assert refused.findtext("code") == "ParameterDataIncorrect"

    # aeolus-cli 2012 (ImportCommand): ActiveResource's to_xml of target_identifier, image_descriptor,
    # provider_account_name and environment.
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<image>\n  <target_identifier>mock-image-7</target_identifier>\n'
        "  <image_descriptor>&lt;image&gt;&lt;name&gt;mock-image-7&lt;/name&gt;&lt;/image&gt;</image_descriptor>\n"
        "  <provider_account_name>mock-acc</provider_account_name>\n  <environment>default</environment>\n</image>\n"
    )
    of_2012 = like_recorded(send(conductor, exchange, body=body), exchange)
    pushed = of_2012.find("build/target_images/target_image/provider_images/provider_image")
    factory = conductor.get_json(f"/imagefactory/builders/{pushed.get('id')}")
    assert (factory["provider"], factory["target"], factory["identifier_on_provider"]) == (
        "mock",
        "mock",
        "mock-image-7",
    )

    for image in (imported, of_2012):
        deleted = send(
            conductor,
            recorded("aeolus_cli", "delete_command/delete_image.yml", "DELETE"),
            {"55bc53d9-7310-4cff-8c26-99823d79dfa6": image.get("id")},
        )
        assert deleted.status_code == 200, deleted.text
        assert etree.fromstring(deleted.content).findtext("content/provider_content/target_identifier") in (
            "ami-5592553c",
            "mock-image-7",
        )
    assert conductor.get(f"/imagefactory/builders/{target_image_id}").status_code == 404


def test_every_listing_answers_with_and_without_the_suffix(conductor: Daemon) -> None:
    """The listings aeolus-cli reads, and the spec's, answer alike with and without .xml."""
    made = build_mock(conductor)
    paths = [
        "images",
        "builds",
        "target_images",
        "provider_images",
        "provider_accounts",
        "providers",
        "provider_types",
        "environments",
        "environments/default/images",
        f"images/{made['image']}",
        f"images/{made['image']}/builds",
        f"builds/{made['build']}/target_images",
        f"target_images/{made['target_image']}/provider_images",
        f"provider_images/{made['provider_image']}",
    ]
    for path in paths:
        answers = [
            conductor.get(
                f"/conductor/api/{path}{suffix}",
                auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD),
                headers={"Accept": "application/xml", "Accept_language": "en"},
            )
            for suffix in ("", ".xml")
        ]
        assert [a.status_code for a in answers] == [200, 200], (path, [a.text for a in answers])
        assert xml_names(answers[0].content) == xml_names(answers[1].content), path
    environments = etree.fromstring(
        conductor.get("/conductor/api/environments.xml", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)).content
    )
    assert [e.findtext("name") for e in environments] == ["default"]
    providers = etree.fromstring(
        conductor.get("/conductor/api/providers.xml", auth=(CONDUCTOR_USER, CONDUCTOR_PASSWORD)).content
    )
    assert [(p.findtext("name"), p.findtext("provider_type")) for p in providers] == [("mock", "mock")]
