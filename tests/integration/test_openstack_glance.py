"""OpenStack pushes through the real daemon into a real Glance 33, authenticating with a real Keystone.

The session's ``openstack`` peer (support.openstack_peer) runs Keystone and
Glance on loopback; one daemon here (Conductor API on, two provider
accounts) has a ``provider_dir`` defining the cloud, one behind a small
proxy in front of Glance (that can stall or fail the data upload), one whose
Keystone refuses connections and one whose host does not resolve.  A
Mock-OS ``openstack-kvm`` (qcow2) target image is built and pushed, then read
back from Glance: the data, the properties, ``active``.  Failures must end
FAILED with a reason within 3 minutes and leave no image in Glance; no
secret may show anywhere.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from support.daemon import Daemon, DaemonPool, free_port, mock_config
from support.openstack_peer import PASSWORD, PROJECT, REGION, USER, OpenStackPeer
from support.proxying import injected_failure, relay, serve
from support.pushes import (
    builder_log,
    cli_push,
    conductor_call,
    conductor_users,
    everything_said,
    push,
    refused_at_start,
    write_providers,
)

TEMPLATE = (
    "<template><name>glancepush</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>pushed to Glance</description></template>"
)
BUILD_TIMEOUT = 240.0
PUSH_TIMEOUT = 120.0
#: The issue's bound for a refused password or an unreachable endpoint.
FAILURE_BOUND = 180.0


def password_credentials(password: str = PASSWORD) -> str:
    return (
        "<provider_credentials><openstack_credentials>"
        f"<username>{USER}</username><password>{password}</password><project_name>{PROJECT}</project_name>"
        "<user_domain_name>Default</user_domain_name><project_domain_name>Default</project_domain_name>"
        "</openstack_credentials></provider_credentials>"
    )


def application_credentials(peer: OpenStackPeer) -> str:
    credential = peer.application_credential
    return (
        "<provider_credentials><openstack_credentials>"
        f"<application_credential_id>{credential.id}</application_credential_id>"
        f"<application_credential_secret>{credential.secret}</application_credential_secret>"
        "</openstack_credentials></provider_credentials>"
    )


class UploadProxy:
    """A proxy in front of Glance; ``mode`` makes image data uploads stall ("stall") or fail ("fail")."""

    def __init__(self, upstream_port: int) -> None:
        self.mode = ""
        self.uploads = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                if self.command == "PUT" and self.path.endswith("/file") and proxy.mode:
                    proxy.uploads += 1
                    if proxy.mode == "stall":
                        time.sleep(20)
                    injected_failure(self)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                relay(self, http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60), body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

        self.server = serve(Handler, "glance-proxy")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(openstack: OpenStackPeer) -> Iterator[UploadProxy]:
    instance = UploadProxy(openstack.glance_port)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def glance_daemon(
    module_daemon_factory: DaemonPool,
    openstack: OpenStackPeer,
    proxy: UploadProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Daemon:
    folder = tmp_path_factory.mktemp("openstack")
    providers = folder / "providers"
    definitions = {
        "os-lab": {"auth_url": openstack.auth_url, "region": REGION, "interface": "public"},
        "os-proxied": {"auth_url": openstack.auth_url, "image_endpoint": proxy.url},
        "os-closed": {"auth_url": f"http://127.0.0.1:{free_port()}/v3"},
        "os-nowhere": {"auth_url": "http://no-such-host.invalid:5000/v3"},
        "os-elsewhere": {"auth_url": openstack.auth_url, "region": "RegionTwo"},
    }
    write_providers(providers, "openstack", definitions)
    (folder / "password.xml").write_text(password_credentials())
    (folder / "appcred.xml").write_text(application_credentials(openstack))
    config = mock_config(
        provider_dir=str(providers),
        conductor=True,
        conductor_users=conductor_users(),
        provider_accounts={
            "os-password": {"provider": "os-lab", "credentials": str(folder / "password.xml")},
            "os-appcred": {"provider": "os-lab", "credentials": str(folder / "appcred.xml")},
        },
    )
    return module_daemon_factory.make(config, name="glance")


@pytest.fixture(scope="module")
def target_image(glance_daemon: Daemon) -> dict[str, Any]:
    """A COMPLETED Mock-OS ``openstack-kvm`` target image, with the SHA-512 of its downloaded file."""
    answer = glance_daemon.post("/imagefactory/images", data={"targets": "openstack-kvm", "template": TEMPLATE})
    assert answer.status_code == 202, answer.text
    build = answer.json()["build"]
    href = build["target_images"][0]["href"]
    detail = glance_daemon.wait_final(href, timeout=BUILD_TIMEOUT)
    assert detail["status"] == "COMPLETED", detail
    digest = hashlib.sha512()
    with glance_daemon.get(href + "/raw_image", stream=True, timeout=120) as download:
        assert download.status_code == 200, download.text[:300]
        for chunk in download.iter_content(1024 * 1024):
            digest.update(chunk)
    return {"href": href, "id": detail["id"], "build_id": build["id"], "sha512": digest.hexdigest()}


def glance_images_of(peer: OpenStackPeer, provider_image_id: str) -> list[dict[str, Any]]:
    """The Glance images a push made (their name holds the provider image id)."""
    return [image for image in peer.images() if provider_image_id in (image.get("name") or "")]


def assert_landed(peer: OpenStackPeer, done: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The pushed Glance image is active, holds the image file's bytes, and has the expected properties."""
    assert done["status"] == "COMPLETED", done
    assert done["completed"] == 100
    image = peer.image(done["identifier_on_provider"])
    assert image is not None
    assert image["status"] == "active"
    assert image["disk_format"] == "qcow2" and image["container_format"] == "bare"
    assert "glancepush" in image["name"] and done["id"] in image["name"]
    assert image["os_distro"] == "mock" and image["os_version"] == "1" and image["architecture"] == "x86_64"
    assert image["hw_disk_bus"] == "virtio"
    assert image["imagefactory_build_id"] == target["build_id"]
    assert image["imagefactory_target_image_id"] == target["id"]
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == target["sha512"]
    downloaded = peer.glance("GET", f"/v2/images/{image['id']}/file")
    assert downloaded.status_code == 200
    assert hashlib.sha512(downloaded.content).hexdigest() == target["sha512"], "Glance holds the image file's bytes"
    return image


# -- tests ---------------------------------------------------------------------


def test_a_push_with_a_password_makes_an_active_glance_image_of_the_file(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """Pushed with a password: the Glance image is active, its bytes and properties right; the account is the user."""
    started = push(glance_daemon, target_image, "os-lab", password_credentials())
    done = glance_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    image = assert_landed(openstack, done, target_image)
    assert done["provider"] == "os-lab" and done["provider_account_identifier"] == USER
    log = builder_log(glance_daemon, started["id"])
    assert f"created Glance image {image['id']}" in log and "its sha512 matches the image file" in log


def test_a_push_with_an_application_credential(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """Pushed with an application credential: the account shown is the credential's id."""
    started = push(glance_daemon, target_image, "os-lab", application_credentials(openstack))
    done = glance_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    assert_landed(openstack, done, target_image)
    assert done["provider_account_identifier"] == openstack.application_credential.id


def test_a_wrong_password_fails_with_keystones_refusal_and_makes_nothing(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """A refused password ends FAILED, within the bound, saying Keystone refused; no Glance image is left."""
    begun = time.monotonic()
    started = push(glance_daemon, target_image, "os-lab", password_credentials("not-the-password"))
    done = glance_daemon.wait_final(started["href"], timeout=FAILURE_BOUND)
    assert done["status"] == "FAILED", done
    assert time.monotonic() - begun < FAILURE_BOUND
    assert done["status_detail"] == "os-lab: authenticate failed: Keystone refused the credentials (HTTP 401)"
    assert glance_images_of(openstack, started["id"]) == []


def test_an_unreachable_keystone_fails_within_three_minutes(
    glance_daemon: Daemon, target_image: dict[str, Any]
) -> None:
    """A refused connection and an unresolvable host both end FAILED with a reason within 3 minutes."""
    begun = time.monotonic()
    started = {
        name: push(glance_daemon, target_image, name, password_credentials()) for name in ("os-closed", "os-nowhere")
    }
    for name, pushed in started.items():
        done = glance_daemon.wait_final(pushed["href"], timeout=FAILURE_BOUND + 10)
        took = time.monotonic() - begun
        assert done["status"] == "FAILED", done
        assert took < FAILURE_BOUND, took
        assert done["status_detail"].startswith(f"{name}: authenticate failed: cannot reach the endpoint: "), done
        print(f"{name}: FAILED after {took:.1f} s: {done['status_detail']}")


def test_a_region_without_glance_in_the_catalog_fails_saying_so(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """Keystone accepts the password, but its catalog has no Glance in the region: FAILED naming the region."""
    started = push(glance_daemon, target_image, "os-elsewhere", password_credentials())
    done = glance_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    assert done["status"] == "FAILED", done
    assert done["status_detail"] == (
        "os-elsewhere: authenticate failed: not in Keystone's catalog: "
        "public endpoint for image service in RegionTwo region not found"
    )
    assert glance_images_of(openstack, started["id"]) == []


def test_a_failed_upload_deletes_the_half_made_image(
    glance_daemon: Daemon, openstack: OpenStackPeer, proxy: UploadProxy, target_image: dict[str, Any]
) -> None:
    """Glance failing the data upload ends the push FAILED with its words, and the created image is deleted."""
    proxy.mode = "fail"
    try:
        started = push(glance_daemon, target_image, "os-proxied", password_credentials())
        done = glance_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    finally:
        proxy.mode = ""
    assert done["status"] == "FAILED", done
    assert done["status_detail"].startswith("os-proxied: upload image data failed: HTTP 500"), done
    assert glance_images_of(openstack, started["id"]) == [], "the failed push deleted its image"
    assert "deleted Glance image" in builder_log(glance_daemon, started["id"])


def test_a_cancelled_push_deletes_its_image(
    glance_daemon: Daemon, openstack: OpenStackPeer, proxy: UploadProxy, target_image: dict[str, Any]
) -> None:
    """Cancelled while its data goes up, a push ends FAILED "cancelled by a client" and its image is deleted."""
    proxy.mode = "stall"
    uploads = proxy.uploads
    try:
        started = push(glance_daemon, target_image, "os-proxied", password_credentials())
        deadline = time.monotonic() + PUSH_TIMEOUT
        while proxy.uploads == uploads and time.monotonic() < deadline:
            time.sleep(0.05)
        made = glance_images_of(openstack, started["id"])
        assert len(made) == 1, made
        cancel = glance_daemon.delete(f"/imagefactory/builders/{started['id']}")
        assert 200 <= cancel.status_code < 300, cancel.text
        done = glance_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
        assert done["status"] == "FAILED" and done["status_detail"] == "cancelled by a client", done
        deadline = time.monotonic() + 60
        while openstack.image(made[0]["id"]) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proxy.mode = ""
    assert openstack.image(made[0]["id"]) is None, "the cancelled push deleted its image"


def test_an_unknown_provider_a_wrong_target_and_bad_credentials_are_400(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """Refused at once, saying why: an unknown provider, a target Glance does not take, credentials lacking a part."""
    answer = glance_daemon.post(
        target_image["href"] + "/provider_images", data={"provider": "os-moon", "credentials": password_credentials()}
    )
    assert answer.status_code == 400 and "os-moon" in answer.json()["message"], answer.text
    built = glance_daemon.post("/imagefactory/images", data={"targets": "mock", "template": TEMPLATE})
    mock_href = built.json()["build"]["target_images"][0]["href"]
    assert glance_daemon.wait_final(mock_href, timeout=BUILD_TIMEOUT)["status"] == "COMPLETED"
    answer = glance_daemon.post(
        mock_href + "/provider_images", data={"provider": "os-lab", "credentials": password_credentials()}
    )
    assert answer.status_code == 400 and "cannot take 'mock' images" in answer.json()["message"], answer.text
    answer = glance_daemon.post(
        target_image["href"] + "/provider_images",
        data={"provider": "os-lab", "credentials": password_credentials().replace(f"<username>{USER}</username>", "")},
    )
    assert answer.status_code == 400 and "lacks <username>" in answer.json()["message"], answer.text
    assert PASSWORD not in answer.text


def test_a_bad_openstack_provider_file_stops_the_daemon_at_start(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """A provider file of type openstack with a wrong interface: the daemon does not start, naming the file."""
    folder = tmp_path / "providers"
    folder.mkdir()
    bad = {"name": "os-bad", "type": "openstack", "auth_url": "http://127.0.0.1:5000/v3", "interface": "private"}
    (folder / "bad.json").write_text(json.dumps(bad))
    said = refused_at_start(daemon_factory, folder)
    assert f"provider definition {folder / 'bad.json'}: interface 'private' must be one of" in said, said[-2000:]


def test_conductor_pushes_to_two_accounts_and_delete_removes_the_glance_image(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any]
) -> None:
    """A multi-push to both accounts lands twice; the Conductor DELETE of one removes it from Glance."""
    started = conductor_call(
        glance_daemon,
        "POST",
        "/provider_images",
        f"<provider_image><target_image_id>{target_image['id']}</target_image_id>"
        "<provider_account>os-password,os-appcred</provider_account>"
        "</provider_image>",
    )
    ids = [element.get("id") for element in started]
    assert len(ids) == 2, etree.tostring(started)
    done = {pid: glance_daemon.wait_final(f"/imagefactory/builders/{pid}", timeout=PUSH_TIMEOUT) for pid in ids}
    accounts = sorted(document["provider_account_identifier"] for document in done.values())
    assert accounts == sorted([USER, openstack.application_credential.id])
    for document in done.values():
        assert_landed(openstack, document, target_image)
    gone, kept = ids
    glance_id = done[gone]["identifier_on_provider"]
    deleted = conductor_call(glance_daemon, "DELETE", f"/provider_images/{gone}")
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("target_identifier") == glance_id
    assert openstack.image(glance_id) is None, "the DELETE removed the image from Glance"
    assert openstack.image(done[kept]["identifier_on_provider"]) is not None


def test_the_cli_pushes_to_an_openstack_provider(
    glance_daemon: Daemon, openstack: OpenStackPeer, target_image: dict[str, Any], tmp_path: Path
) -> None:
    """``imagefactory-cli push --provider os-lab --credentials FILE --wait`` lands the image; no secret printed."""
    (tmp_path / "os.xml").write_text(password_credentials())
    result = cli_push(glance_daemon, tmp_path, "os-lab", tmp_path / "os.xml", target_image["id"], PUSH_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    (done,) = json.loads(result.stdout)
    assert done["provider"] == "os-lab"
    assert_landed(openstack, done, target_image)


def test_no_secret_anywhere(glance_daemon: Daemon, openstack: OpenStackPeer) -> None:
    """Last: the daemon's log, output, state files and answers hold neither the password nor the credential secret."""
    secrets = (PASSWORD, openstack.application_credential.secret)
    said = everything_said(glance_daemon)
    for secret in secrets:
        assert secret not in said
