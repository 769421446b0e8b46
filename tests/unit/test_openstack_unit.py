"""The OpenStack provider on fakes: credentials, provider files, the Glance push and its clean-up, error words.

Client calls run inline (InlineDoor), time is a Clock, and Glance is a fake
images manager; the real Keystone and Glance are tests/integration/test_openstack_glance.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from glanceclient import exc as glance_errors
from keystoneauth1 import exceptions as auth_errors
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imgfac_twisted.config import Config
from imgfac_twisted.errors import ConfigError, InvalidCredentials
from imgfac_twisted.providers import PushResult, openstack_push
from imgfac_twisted.providers import openstack as openstack_module
from imgfac_twisted.providers.openstack import OpenStackProvider
from imgfac_twisted.providers.openstack_calls import (
    Connection,
    OpenStackError,
    StreamingReader,
    UploadStopped,
    call,
    describe,
)
from imgfac_twisted.providers.openstack_clouds import load_clouds, parse_cloud
from imgfac_twisted.registry import PluginEnvironment
from imgfac_twisted.testing import InlineDoor
from support import push_fakes
from support.push_fakes import PushJob

SECRET = "s3cr3t-Distinctive-9f2e"
CLOUD = {"name": "os-lab", "type": "openstack", "auth_url": "https://keystone.example:5000/v3", "region": "RegionOne"}


def password_xml(**fields: str) -> str:
    values = {"username": "alice", "password": SECRET, "project_name": "proj", **fields}
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in values.items() if value is not None)
    return f"<provider_credentials><openstack_credentials>{inner}</openstack_credentials></provider_credentials>"


def make_provider(tmp_path: Path, clock: Clock | None = None) -> OpenStackProvider:
    folder = tmp_path / "providers"
    folder.mkdir(exist_ok=True)
    (folder / "os-lab.json").write_text(json.dumps(CLOUD))
    environment = PluginEnvironment(Config(provider_dir=str(folder)), clock or Clock(), InlineDoor())
    return OpenStackProvider(environment)


# -- credentials -----------------------------------------------------------------


def test_password_credentials_default_the_domains_and_show_only_the_user(tmp_path: Path) -> None:
    """A password: the user is the account; the domains default to Default; the password is kept, not shown."""
    credentials = make_provider(tmp_path).parse_credentials(password_xml())
    assert credentials.account_identifier == "alice"
    assert credentials.secrets["user_domain_name"] == credentials.secrets["project_domain_name"] == "Default"
    assert credentials.secrets["password"] == SECRET and SECRET not in repr(credentials)


def test_application_credentials_show_the_credential_id(tmp_path: Path) -> None:
    """An application credential: its id is the account, its secret kept."""
    xml = (
        "<provider_credentials><openstack_credentials><application_credential_id>ac1</application_credential_id>"
        f"<application_credential_secret>{SECRET}</application_credential_secret>"
        "</openstack_credentials></provider_credentials>"
    )
    credentials = make_provider(tmp_path).parse_credentials(xml)
    assert credentials.account_identifier == "ac1"
    assert credentials.secrets == {"application_credential_id": "ac1", "application_credential_secret": SECRET}


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        (password_xml(password=""), "lacks <password>"),
        (password_xml(project_name=""), "lacks <project_name>"),
        (
            "<provider_credentials><openstack_credentials><application_credential_id>x</application_credential_id>"
            "</openstack_credentials></provider_credentials>",
            "lacks <application_credential_secret>",
        ),
        ("<provider_credentials><ec2_credentials/></provider_credentials>", "<openstack_credentials>"),
    ],
)
def test_unusable_credentials_are_refused_naming_what_is_missing(tmp_path: Path, xml: str, says: str) -> None:
    """Missing parts are named; no value is echoed."""
    with pytest.raises(InvalidCredentials) as raised:
        make_provider(tmp_path).parse_credentials(xml)
    assert says in raised.value.message and SECRET not in raised.value.message


# -- provider files ------------------------------------------------------------------


def test_a_cloud_definition_is_read_with_its_defaults(tmp_path: Path) -> None:
    """Interface public by default; other types and unparseable files are not this plug-in's."""
    (tmp_path / "os.json").write_text(json.dumps(CLOUD))
    (tmp_path / "ec2.json").write_text(json.dumps({"name": "e", "type": "ec2"}))
    (tmp_path / "broken.json").write_text("{")
    (cloud,) = load_clouds(str(tmp_path)).values()
    assert (cloud.name, cloud.interface, cloud.region, cloud.image_endpoint) == ("os-lab", "public", "RegionOne", None)
    provider = make_provider(tmp_path)
    assert provider.provider_names() == ["os-lab"] and provider.serves("os-lab") and not provider.serves("e")
    assert provider.location("os-lab") == (CLOUD["auth_url"], "RegionOne")
    assert provider.accepts_target("openstack-kvm") and not provider.accepts_target("ec2")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"interface": "private"}, "interface 'private' must be one of public, internal, admin"),
        ({"auth_url": "ftp://x"}, "must be an http:// or https:// URL"),
        ({"auth_url": "https://u:pw@x/v3"}, "auth_url must not hold credentials"),
        ({"colour": "blue"}, "unknown key(s) 'colour'"),
        ({"name": "ec2-us-east-1"}, "built-in provider's name"),
        ({"ca_bundle": "/no/such.pem"}, "ca_bundle '/no/such.pem' is not a file"),
        ({"auth_url": None}, "lacks 'auth_url'"),
    ],
)
def test_a_wrong_cloud_definition_says_what_is_wrong(change: dict[str, Any], says: str) -> None:
    document = {**CLOUD, **change}
    document = {key: value for key, value in document.items() if value is not None}
    with pytest.raises(ValueError) as raised:
        parse_cloud(document)
    assert says in str(raised.value) and "pw" not in str(raised.value)


def test_every_bad_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({**CLOUD, "interface": "x"}))
    (tmp_path / "b.json").write_text(json.dumps({**CLOUD, "name": "other", "region": "bad region"}))
    with pytest.raises(ConfigError) as raised:
        load_clouds(str(tmp_path))
    assert "a.json" in raised.value.message and "b.json" in raised.value.message


# -- the push ------------------------------------------------------------------------


class FakeImages:
    """Glance's images manager: create, upload (reading the file object to the end), get, delete."""

    def __init__(self, corrupt: bool = False, fail_upload: Exception | None = None) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.corrupt = corrupt
        self.fail_upload = fail_upload

    def create(self, **properties: Any) -> dict[str, Any]:
        image = {"id": f"img-{len(self.images) + 1}", "status": "queued", **properties}
        self.images[image["id"]] = image
        return image

    def upload(self, image_id: str, reader: Any, size: int) -> None:
        digest = hashlib.sha512()
        while piece := reader.read(65536):
            digest.update(piece)
            if self.fail_upload is not None:
                raise self.fail_upload
        value = hashlib.sha512(b"other").hexdigest() if self.corrupt else digest.hexdigest()
        self.images[image_id].update(status="active", size=size, os_hash_algo="sha512", os_hash_value=value)

    def get(self, image_id: str) -> dict[str, Any]:
        return self.images[image_id]

    def delete(self, image_id: str) -> None:
        self.deleted.append(image_id)
        del self.images[image_id]


class FakeGlance:
    def __init__(self, images: FakeImages) -> None:
        self.images = images


def Job(path: str, clock: Clock, target: str = "openstack-kvm") -> PushJob:
    """What the dispatcher hands a push to os-lab."""
    return PushJob(path, target, "os-lab", reactor=clock)


def run_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: FakeImages, target: str = "openstack-kvm"
) -> tuple[Any, Job]:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    clock = Clock()
    monkeypatch.setattr(
        openstack_push, "connect", lambda cloud, credentials: Connection(FakeGlance(images), "http://g")
    )
    provider = make_provider(tmp_path, clock)
    job = Job(str(path), clock, target)
    found: list[Any] = []
    provider.push(job, provider.parse_credentials(password_xml())).addBoth(found.append)
    for _ in range(100):
        if found:
            break
        clock.advance(1)
    assert found, "the push did not finish"
    return found[0], job


def test_a_push_creates_the_image_streams_the_file_and_checks_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Glance image gets the formats and the template's facts; progress ends at 100; the id is the result."""
    images = FakeImages()
    result, job = run_push(tmp_path, monkeypatch, images)
    assert isinstance(result, PushResult), result
    image = images.images[result.identifier]
    assert image["status"] == "active"
    assert {key: image[key] for key in ("disk_format", "container_format", "hw_disk_bus")} == {
        "disk_format": "qcow2",
        "container_format": "bare",
        "hw_disk_bus": "virtio",
    }
    assert image["name"] == "f14jeos-prov-1"
    assert (image["os_distro"], image["os_version"], image["architecture"]) == ("fedora", "14", "x86_64")
    assert (image["imagefactory_build_id"], image["imagefactory_target_image_id"]) == ("b", "t")
    assert job.percents[-2:] == [95, 100] and job.percents == sorted(job.percents)
    assert any("its sha512 matches the image file" in line for line in job.logs)
    assert all(SECRET not in line for line in job.logs)


def test_a_hash_that_differs_fails_the_push_and_deletes_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = FakeImages(corrupt=True)
    result, job = run_push(tmp_path, monkeypatch, images)
    assert isinstance(result, Failure) and result.check(OpenStackError)
    assert "the upload was corrupted" in result.value.message
    assert images.deleted == ["img-1"] and images.images == {}
    assert "deleted Glance image img-1" in job.logs


def test_a_failing_upload_fails_with_glances_words_and_deletes_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = FakeImages(fail_upload=glance_errors.HTTPInternalServerError(details="disk full"))
    result, _ = run_push(tmp_path, monkeypatch, images)
    assert isinstance(result, Failure)
    assert result.value.message == "os-lab: upload image data failed: HTTP 500: disk full"
    assert images.deleted == ["img-1"]


def test_a_target_glance_does_not_take_is_refused_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = FakeImages()
    result, _ = run_push(tmp_path, monkeypatch, images, target="vsphere")
    assert isinstance(result, Failure) and "take openstack-kvm images" in result.value.message
    assert images.images == {} and images.deleted == []


# -- client errors and the reader -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (auth_errors.Unauthorized(), "Keystone refused the credentials (HTTP 401)"),
        (auth_errors.ConnectFailure("Unable to establish connection to http://k:5000"), "cannot reach the endpoint: "),
        (
            glance_errors.HTTPConflict(details="Image status transition from active to saving is not allowed"),
            "HTTP 409",
        ),
    ],
)
def test_client_errors_are_told_in_a_few_words(error: Exception, says: str) -> None:
    assert says in describe(error)


def test_a_call_hides_the_secrets_in_an_error() -> None:
    def leaky() -> None:
        raise RuntimeError(f"bad password {SECRET}")

    with pytest.raises(OpenStackError) as raised:
        call("os-lab", "authenticate", (SECRET,), leaky)
    assert raised.value.message == "os-lab: authenticate failed: RuntimeError: bad password ***"


def test_the_reader_hashes_what_it_hands_out_and_stops_when_told(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = os.urandom(3 * 1024 * 1024 + 5)
    path.write_bytes(data)
    reader = StreamingReader(str(path))
    read = b""
    while piece := reader.read(1 << 30):
        assert len(piece) <= 1024 * 1024, "pieces stay bounded whatever is asked"
        read += piece
    assert read == data and reader.sent == len(data)
    assert reader.hexdigest() == hashlib.sha512(data).hexdigest()
    reader.stop()
    with pytest.raises(UploadStopped):
        reader.read(10)
    reader.close()


# -- deleting a pushed image ------------------------------------------------------------


def deletion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: FakeImages, with_credentials: bool = True) -> Any:
    monkeypatch.setattr(
        openstack_module, "connect", lambda cloud, credentials: Connection(FakeGlance(images), "http://g")
    )
    provider = make_provider(tmp_path)
    credentials = provider.parse_credentials(password_xml()) if with_credentials else None
    found: list[Any] = []
    provider.delete("os-lab", "img-1", {}, credentials).addBoth(found.append)
    return found[0]


def test_delete_removes_the_glance_image_and_an_image_already_gone_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = FakeImages()
    images.create(name="x")
    assert deletion(tmp_path, monkeypatch, images) is None
    assert images.deleted == ["img-1"] and images.images == {}

    def gone(image_id: str) -> None:
        raise glance_errors.HTTPNotFound(details="No image found")

    images.delete = gone  # type: ignore[method-assign]
    assert deletion(tmp_path, monkeypatch, images) is None


def test_delete_without_the_accounts_credentials_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = deletion(tmp_path, monkeypatch, FakeImages(), with_credentials=False)
    assert isinstance(result, Failure) and "no provider account of this daemon" in result.value.message


def test_delete_refused_by_glance_fails_with_its_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = FakeImages()

    def refused(image_id: str) -> None:
        raise glance_errors.HTTPForbidden(details="Image is protected")

    images.delete = refused  # type: ignore[method-assign]
    result = deletion(tmp_path, monkeypatch, images)
    assert isinstance(result, Failure)
    assert result.value.message == "os-lab: delete image failed: HTTP 403: Image is protected"


class HeldDoor(push_fakes.HeldDoor):
    def actions(self) -> list[str]:
        """The Glance actions waiting."""
        return [args[1] for fn, args, _, _ in self.waiting if fn is call]


def test_a_push_cancelled_while_glance_creates_the_image_deletes_it_once_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create's answer comes after the cancel: the image it names is still deleted."""
    images = FakeImages()
    monkeypatch.setattr(
        openstack_push, "connect", lambda cloud, credentials: Connection(FakeGlance(images), "http://g")
    )
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"qcow2 data")
    clock, door = Clock(), HeldDoor()
    folder = tmp_path / "providers"
    folder.mkdir()
    (folder / "os-lab.json").write_text(json.dumps(CLOUD))
    provider = OpenStackProvider(PluginEnvironment(Config(provider_dir=str(folder)), clock, door))
    pushing = provider.push(Job(str(path), clock), provider.parse_credentials(password_xml()))
    for _ in range(10):
        if "create image" in door.actions():
            break
        door.release()
    assert door.actions() == ["create image"]
    found: list[Any] = []
    pushing.addBoth(found.append)
    pushing.cancel()
    assert not found, "the push waits for the create's answer (a thread cannot be stopped)"
    door.release()
    assert door.actions() == ["delete image"]
    door.release()
    (result,) = found
    assert isinstance(result, Failure)
    assert images.deleted == ["img-1"] and images.images == {}
