"""The Conductor API through the real daemon: the spec's curl examples as requests, multi-push to moto and mock.

One daemon (TLS, ``conductor`` on, a user whose bcrypt hash is made here,
two provider accounts: ``ec2-acc`` on a ``moto_server`` on loopback and
``mock-acc``) serves both APIs.  Answers are parsed with lxml and compared,
element for element, with the spec's examples (see test_conductor_unit).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from lxml import etree

from support.conductor_shapes import (
    SPEC_BUILD,
    SPEC_IMAGE,
    SPEC_PROVIDER_IMAGE,
    SPEC_STARTED_IMAGE,
    SPEC_STARTED_PUSHES,
    SPEC_TARGET_IMAGE,
    shape,
    spec_shape,
)
from support.daemon import Daemon, DaemonPool, mock_config
from support.moto_peer import EC2_TEMPLATE, MotoServer, credentials

API = "/conductor/api"
USER, PASSWORD = "admin", "correct horse battery"
XML = {"Accept": "application/xml", "Content-Type": "application/xml"}
MOCK_CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>mockuser</username>"
    "<password>MOCKPASS</password></mock_credentials></provider_credentials>"
)
BUILD_TIMEOUT = 240.0
PUSH_TIMEOUT = 120.0
FINAL = ("COMPLETED", "FAILED")


def conductor_config(folder: Path, moto: MotoServer, **extra: Any) -> dict[str, Any]:
    """Config with the Conductor API on, one user, an EC2 account on moto and a mock account."""
    (folder / "providers").mkdir(exist_ok=True)
    (folder / "providers" / "moto-east.json").write_text(
        f'{{"name": "moto-east", "type": "ec2", "region": "us-east-1", "endpoint_url": "{moto.url}"}}'
    )
    (folder / "ec2-acc.xml").write_text(credentials())
    (folder / "mock-acc.xml").write_text(MOCK_CREDENTIALS)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode().replace("$2b$", "$2y$", 1)
    return mock_config(
        conductor=True,
        conductor_users={USER: hashed},
        provider_dir=str(folder / "providers"),
        provider_accounts={
            "ec2-acc": {"provider": "moto-east", "credentials": str(folder / "ec2-acc.xml")},
            "mock-acc": {"provider": "mock", "credentials": str(folder / "mock-acc.xml")},
        },
        **extra,
    )


@pytest.fixture(scope="module")
def conductor(module_daemon_factory: DaemonPool, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    return module_daemon_factory.make(conductor_config(tmp_path_factory.mktemp("conductor"), moto), name="conductor")


def call(
    daemon: Daemon,
    method: str,
    path: str,
    body: str | bytes | None = None,
    auth: Any = (USER, PASSWORD),
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """One Conductor request: Basic auth, XML both ways (as the README's curl examples)."""
    return daemon.request(
        method,
        path if path.startswith("http") else API + path,
        auth=auth,
        headers=headers if headers is not None else XML,
        data=body,
        timeout=30,
    )


def xml_of(answer: requests.Response, status: int = 200) -> etree._Element:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/xml; charset=utf-8"
    return etree.fromstring(answer.content)


def error_code(answer: requests.Response, status: int) -> str:
    document = xml_of(answer, status)
    assert document.tag == "error" and [child.tag for child in document] == ["code", "message"]
    assert document.findtext("message")
    return document.findtext("code")


def new_image(daemon: Daemon, targets: str, template: str = EC2_TEMPLATE) -> etree._Element:
    return xml_of(
        call(
            daemon, "POST", "/images", f"<image><targets>{targets}</targets><tdl><![CDATA[{template}]]></tdl></image>"
        ),
        201,
    )


def wait_status(daemon: Daemon, href: str, timeout: float) -> etree._Element:
    """GET a target or provider image until its status is final."""
    deadline = time.monotonic() + timeout
    while True:
        document = xml_of(call(daemon, "GET", href))
        if document.findtext("status") in FINAL or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


@pytest.fixture(scope="module")
def built(conductor: Daemon) -> dict[str, Any]:
    """An image built for ec2 and mock through the Conductor API, both target images COMPLETED."""
    answer = new_image(conductor, "ec2,mock")
    targets = answer.findall("build/target_images/target_image")
    finals = {t.get("id"): wait_status(conductor, t.get("href"), BUILD_TIMEOUT) for t in targets}
    assert [f.findtext("status") for f in finals.values()] == ["COMPLETED", "COMPLETED"], [
        etree.tostring(f) for f in finals.values()
    ]
    return {
        "answer": answer,
        "image_id": answer.get("id"),
        "build_id": answer.find("build").get("id"),
        "targets": finals,
    }


# -- the spec's examples ----------------------------------------------------------


def test_creating_an_image_for_one_and_for_several_targets(conductor: Daemon) -> None:
    """POST images (spec examples 'single target' and 'multiple targets'): 201, the nested document, Location."""
    single = call(
        conductor, "POST", "/images", f"<image><targets>mock</targets><tdl><![CDATA[{EC2_TEMPLATE}]]></tdl></image>"
    )
    document = xml_of(single, 201)
    assert shape(document) == spec_shape(SPEC_STARTED_IMAGE)
    assert single.headers["location"] == document.get("href") == conductor.url(f"{API}/images/{document.get('id')}")
    assert document.find("build/target_images/target_image").findtext("status") in ("New", "PENDING", "BUILDING")
    several = new_image(conductor, "ec2,mock")
    assert len(several.findall("build/target_images/target_image")) == 2


def test_listing_and_showing_every_collection(conductor: Daemon, built: dict[str, Any]) -> None:
    """GET images, builds, target_images (and each one): the spec's shapes, linked to each other."""
    image_id, build_id = built["image_id"], built["build_id"]
    images = xml_of(call(conductor, "GET", "/images"))
    assert images.tag == "images"
    (image,) = [i for i in images if i.get("id") == image_id]
    assert shape(image) == spec_shape(SPEC_IMAGE)
    assert (
        image.findtext("name") == "ec2push" and image.findtext("os") == "Mock" and image.findtext("arch") == "aarch64"
    )
    assert image.get("href") == conductor.url(f"{API}/images/{image_id}")
    assert shape(xml_of(call(conductor, "GET", f"/images/{image_id}"))) == spec_shape(SPEC_IMAGE)
    builds = xml_of(call(conductor, "GET", "/builds"))
    (build,) = [b for b in builds if b.get("id") == build_id]
    assert shape(build) == spec_shape(SPEC_BUILD) and build.findtext("image") == image_id
    target_images = xml_of(call(conductor, "GET", "/target_images"))
    mine = [t for t in target_images if t.get("id") in built["targets"]]
    assert len(mine) == 2
    for target in mine:
        if len(target.find("provider_images")) == 0:
            # The spec's shape, plus (additively) the link to the package list of a COMPLETED target image.
            icicle = target.find("icicle")
            target.remove(icicle)
            assert shape(target) == spec_shape(SPEC_TARGET_IMAGE)
        assert target.find("build").get("id") == build_id and target.findtext("object_type") == "target_image"
    assert len({t.findtext("template") for t in mine}) == 1, "one template behind one build"


def test_multi_push_of_a_build_to_an_ec2_and_a_mock_account(
    conductor: Daemon, moto: MotoServer, built: dict[str, Any]
) -> None:
    """Build pushed to ec2-acc,mock-acc: one provider image per account, each COMPLETED; the AMI is in moto."""
    started = xml_of(
        call(
            conductor,
            "POST",
            "/provider_images",
            f"<provider_image><build_id>{built['build_id']}</build_id>"
            "<provider_account>ec2-acc,mock-acc</provider_account></provider_image>",
        ),
        201,
    )
    assert shape(started) == spec_shape(
        SPEC_STARTED_PUSHES.replace(
            "</provider_images>",
            "<provider_image href='h' id='i'><status>New</status><provider/><account/>"
            "</provider_image></provider_images>",
        )
    )
    done = {p.get("id"): wait_status(conductor, p.get("href"), PUSH_TIMEOUT) for p in started}
    assert sorted(d.findtext("provider") for d in done.values()) == ["mock", "moto-east"]
    for document in done.values():
        assert document.findtext("status") == "COMPLETED", etree.tostring(document)
        assert shape(document) == spec_shape(SPEC_PROVIDER_IMAGE)
    (ec2_image,) = [d for d in done.values() if d.findtext("provider") == "moto-east"]
    ami = ec2_image.findtext("target_identifier")
    ec2, _ = moto.clients()
    assert [image["ImageId"] for image in ec2.describe_images(ImageIds=[ami])["Images"]] == [ami]
    listed = xml_of(call(conductor, "GET", "/provider_images"))
    assert set(done) <= {p.get("id") for p in listed}
    target = xml_of(call(conductor, "GET", ec2_image.find("target_image").get("href")))
    assert ec2_image.get("id") in {p.get("id") for p in target.find("provider_images")}


def test_delete_of_an_ec2_provider_image_removes_the_ami_and_its_snapshot(
    conductor: Daemon, moto: MotoServer, built: dict[str, Any]
) -> None:
    """DELETE answers DELETED; the AMI is deregistered and its snapshot deleted in moto; both APIs answer 404."""
    (ec2_target,) = [tid for tid in built["targets"] if _target_of(conductor, tid) == "ec2"]
    started = xml_of(
        call(
            conductor,
            "POST",
            "/provider_images",
            f"<provider_image><target_image_id>{ec2_target}</target_image_id>"
            "<provider_account>ec2-acc</provider_account></provider_image>",
        ),
        201,
    )
    (pushed,) = started
    done = wait_status(conductor, pushed.get("href"), PUSH_TIMEOUT)
    assert done.findtext("status") == "COMPLETED"
    ami = done.findtext("target_identifier")
    factory = conductor.get_json(f"/imagefactory/builders/{pushed.get('id')}")
    snapshot = factory["snapshot_id"]
    ec2, _ = moto.clients()
    assert ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"]
    deleted = xml_of(call(conductor, "DELETE", f"/provider_images/{pushed.get('id')}"))
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("target_identifier") == ami
    assert ec2.describe_images(Filters=[{"Name": "image-id", "Values": [ami]}])["Images"] == []
    assert snapshot not in {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert error_code(call(conductor, "GET", f"/provider_images/{pushed.get('id')}"), 404) == "ProviderImageNotFound"
    assert conductor.get(f"/imagefactory/builders/{pushed.get('id')}").status_code == 404


def _target_of(daemon: Daemon, target_image_id: str) -> str:
    return daemon.get_json(f"/imagefactory/builders/{target_image_id}")["target"]


def test_push_of_an_image_and_of_a_target_image(conductor: Daemon, built: dict[str, Any]) -> None:
    """Spec examples 'pushing an image' (its latest build) and 'a specific target image'."""
    by_image = xml_of(
        call(
            conductor,
            "POST",
            "/provider_images",
            f"<provider_image><image_id>{built['image_id']}</image_id>"
            "<provider_account>mock-acc</provider_account></provider_image>",
        ),
        201,
    )
    (mock_target,) = [tid for tid in built["targets"] if _target_of(conductor, tid) == "mock"]
    assert [xml_of(call(conductor, "GET", p.get("href"))).find("target_image").get("id") for p in by_image] == [
        mock_target
    ]
    by_target = xml_of(
        call(
            conductor,
            "POST",
            "/provider_images",
            f"<provider_image><target_image_id>{mock_target}</target_image_id>"
            "<provider_account>mock-acc</provider_account></provider_image>",
        ),
        201,
    )
    assert len(by_target) == 1
    for pushed in [*by_image, *by_target]:
        assert wait_status(conductor, pushed.get("href"), PUSH_TIMEOUT).findtext("status") == "COMPLETED"


def test_provider_accounts_show_no_credentials(conductor: Daemon) -> None:
    """GET provider_accounts: name, provider, provider type; no secret anywhere in the answer."""
    answer = call(conductor, "GET", "/provider_accounts")
    accounts = {a.get("id"): a for a in xml_of(answer)}
    assert set(accounts) == {"ec2-acc", "mock-acc"}
    assert accounts["ec2-acc"].findtext("provider") == "moto-east"
    assert accounts["ec2-acc"].findtext("provider_type") == "ec2"
    assert accounts["mock-acc"].findtext("provider_type") == "mock"
    assert "SECRET" not in answer.text and "MOCKPASS" not in answer.text
    assert xml_of(call(conductor, "GET", "/provider_accounts/ec2-acc")).findtext("name") == "ec2-acc"
    assert "MOCKPASS" not in conductor.log_text() and "moto-SECRET" not in conductor.log_text()


# -- both APIs, one set of objects --------------------------------------------------


def test_objects_of_either_api_show_in_both(conductor: Daemon) -> None:
    """A factory (JSON) build is listed by the Conductor API; a Conductor build is read by the factory API."""
    made = conductor.post("/imagefactory/images", data={"targets": "mock", "template": EC2_TEMPLATE})
    assert made.status_code == 202, made.text
    factory_image = made.json()
    target_id = factory_image["build"]["target_images"][0]["id"]
    assert factory_image["id"] in {i.get("id") for i in xml_of(call(conductor, "GET", "/images"))}
    assert (
        xml_of(call(conductor, "GET", f"/target_images/{target_id}")).find("build").get("id")
        == factory_image["build"]["id"]
    )
    conducted = new_image(conductor, "mock")
    conducted_target = conducted.find("build/target_images/target_image").get("id")
    detail = conductor.get_json(f"/imagefactory/builders/{conducted_target}")
    assert (detail["image_id"], detail["build_id"]) == (conducted.get("id"), conducted.find("build").get("id"))
    wait_status(conductor, conducted.find("build/target_images/target_image").get("href"), BUILD_TIMEOUT)
    deleted = xml_of(call(conductor, "DELETE", f"/images/{conducted.get('id')}"))
    assert deleted.findtext("status") == "DELETED"
    assert conductor.get(f"/imagefactory/builders/{conducted_target}").status_code == 404
    path = f"/imagefactory/images/{detail['image_id']}/builds/{detail['build_id']}/target_images/{conducted_target}"
    assert conductor.get(path).status_code == 404


# -- errors ---------------------------------------------------------------------------


def test_http_level_errors(conductor: Daemon) -> None:
    """401 (+ WWW-Authenticate: Basic), 404 path, 405 + Allow, 406, 413, 415 (curl's default form type): XML."""
    anonymous = call(conductor, "GET", "/images", auth=None)
    assert error_code(anonymous, 401) == "Unauthorized"
    assert anonymous.headers["www-authenticate"] == 'Basic realm="imagefactory"'
    assert error_code(call(conductor, "GET", "/images", auth=(USER, "wrong")), 401) == "Unauthorized"
    assert error_code(call(conductor, "GET", "/no/such/thing"), 404) == "NotFound"
    not_allowed = call(conductor, "PUT", "/images", "<image/>")
    assert error_code(not_allowed, 405) == "MethodNotAllowed" and "POST" in not_allowed.headers["allow"]
    assert error_code(call(conductor, "GET", "/images", headers={"Accept": "application/json"}), 406) == "NotAcceptable"
    form = call(
        conductor,
        "POST",
        "/images",
        "targets=mock",
        headers={"Accept": "application/xml", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert error_code(form, 415) == "UnsupportedMediaType"
    huge = call(conductor, "POST", "/images", b"<image>" + b" " * (3 * 1024 * 1024) + b"</image>")
    assert error_code(huge, 413) == "RequestTooLarge"


def test_every_spec_error_code_a_request_can_cause(conductor: Daemon, moto: MotoServer, built: dict[str, Any]) -> None:
    """The spec's codes from the requests that should cause them (PushError: see test_conductor_unit)."""
    build_id = built["build_id"]
    push = "<provider_image><{0}>{1}</{0}><provider_account>{2}</provider_account></provider_image>"
    cases = [
        ("GET", "/images/nope", None, 404, "ImageNotFound"),
        ("GET", "/builds/nope", None, 404, "BuildNotFound"),
        ("GET", "/target_images/nope", None, 404, "TargetImageNotFound"),
        ("GET", "/provider_images/nope", None, 404, "ProviderImageNotFound"),
        ("GET", "/provider_accounts/nope", None, 404, "ProviderAccountNotFound"),
        ("DELETE", "/builds/nope", None, 404, "BuildNotFound"),
        ("POST", "/images", "<image><targets>nowhere</targets><tdl>x</tdl></image>", 404, "TargetNotFound"),
        ("POST", "/images", "<image><tdl>x</tdl></image>", 400, "InsufficientParametersSupplied"),
        (
            "POST",
            "/images",
            "<image><targets>mock</targets><tdl>&lt;template/&gt;</tdl></image>",
            400,
            "ParameterDataIncorrect",
        ),
        (
            "POST",
            "/images",
            "<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><image/>",
            400,
            "ParameterDataIncorrect",
        ),
        ("POST", "/provider_images", push.format("build_id", build_id, "nobody"), 404, "ProviderAccountNotFound"),
        ("POST", "/provider_images", push.format("build_id", "nope", "mock-acc"), 404, "BuildNotFound"),
        ("POST", "/provider_images", push.format("image_id", "nope", "mock-acc"), 404, "ImageNotFound"),
        ("POST", "/provider_images", push.format("target_image_id", "nope", "mock-acc"), 404, "TargetImageNotFound"),
        (
            "POST",
            "/provider_images",
            "<provider_image><provider_account>mock-acc</provider_account></provider_image>",
            400,
            "InsufficientParametersSupplied",
        ),
    ]
    for method, path, body, status, code in cases:
        assert error_code(call(conductor, method, path, body), status) == code, (method, path, body)
    running = new_image(conductor, "mock").find("build").get("id")
    assert (
        error_code(call(conductor, "POST", "/provider_images", push.format("build_id", running, "mock-acc")), 400)
        == "ParameterDataIncorrect"
    )

    # A push made through the factory API with credentials no account holds cannot be removed from its cloud.
    (ec2_target,) = [tid for tid in built["targets"] if _target_of(conductor, tid) == "ec2"]
    detail = conductor.get_json(f"/imagefactory/builders/{ec2_target}")
    stranger = credentials(access_key="AKIASTRANGER0000001", account="210987654321")
    pushed = conductor.post(
        f"/imagefactory/images/{detail['image_id']}/builds/{detail['build_id']}/target_images/"
        f"{ec2_target}/provider_images",
        data={"provider": "moto-east", "credentials": stranger},
    )
    assert pushed.status_code == 202, pushed.text
    pushed_id = pushed.json()["id"]
    done = wait_status(conductor, f"/provider_images/{pushed_id}", PUSH_TIMEOUT)
    assert done.findtext("status") == "COMPLETED"
    failure = call(conductor, "DELETE", f"/provider_images/{pushed_id}")
    assert error_code(failure, 500) == "ProviderImageDeleteFailure"
    assert "credentials" in etree.fromstring(failure.content).findtext("message")
    assert error_code(call(conductor, "DELETE", f"/target_images/{ec2_target}"), 500) == "TargetImageDeleteFailure"
    assert error_code(call(conductor, "DELETE", f"/builds/{build_id}"), 500) == "BuildDeleteFailure"
    assert error_code(call(conductor, "DELETE", f"/images/{built['image_id']}"), 500) == "ImageDeleteFailure"
    ec2, _ = moto.clients()
    assert ec2.describe_images(ImageIds=[done.findtext("target_identifier")])["Images"], "nothing was removed"


def test_bad_provider_accounts_stop_the_start(daemon_factory: DaemonPool, moto: MotoServer, tmp_path: Path) -> None:
    """An unknown provider and a broken credentials file: the daemon does not start and names both accounts."""
    config = conductor_config(tmp_path, moto)
    (tmp_path / "broken.xml").write_text("<provider_credentials><ec2_credentials>")
    config["provider_accounts"]["lost"] = {"provider": "ec2-nowhere-9", "credentials": str(tmp_path / "ec2-acc.xml")}
    config["provider_accounts"]["broken"] = {"provider": "moto-east", "credentials": str(tmp_path / "broken.xml")}
    daemon = daemon_factory.make(config, start=False)
    daemon.start()
    assert daemon.process is not None
    daemon.process.wait(timeout=60)
    assert daemon.process.returncode != 0
    said = daemon.output_text() + daemon.log_text()
    assert "provider account 'lost': unknown provider 'ec2-nowhere-9'" in said
    assert "provider account 'broken'" in said and "not well-formed" in said
    assert "moto-SECRET" not in said


def test_a_completed_target_image_links_its_package_list(conductor: Daemon, built: dict[str, Any]) -> None:
    """A COMPLETED target image carries an <icicle> link, with and without ActiveResource's .xml; the link
    answers the ICICLE document (the Mock OS's: no packages)."""
    for target_image in built["targets"].values():
        link = target_image.find("icicle")
        assert link is not None and link.get("href").endswith(f"/target_images/{target_image.get('id')}/icicle")
        for href in (link.get("href"), link.get("href") + ".xml"):
            icicle = xml_of(call(conductor, "GET", href))
            assert icicle.tag == "icicle" and icicle.find("packages") is not None
            assert len(icicle.find("packages")) == 0
