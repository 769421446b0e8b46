"""vSphere pushes through the real daemon into vcsim, VMware's vCenter simulator.

The session's ``vcsim`` peer (support.vcsim_peer) runs vcsim behind a proxy
that hashes the disks uploaded to ``/nfc/`` (vcsim discards them unread)
and can stall or fail them.  One daemon here (Conductor API on, two
provider accounts) has a ``provider_dir`` defining the vCenter (with the
test CA as ``ca_bundle``), one whose port refuses connections and one whose
host does not resolve.  Mock-OS ``vsphere`` (vmdk) and ``ova`` target images
are built and pushed: the VM must be a template in the folder, named after
the template, and the bytes uploaded must be the image's.  Failures end
FAILED with a reason within 3 minutes and leave no VM; no secret may show.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from support.daemon import Daemon, DaemonPool, free_port, mock_config
from support.pushes import (
    builder_log,
    cli_push,
    conductor_call,
    conductor_users,
    everything_said,
    push,
    write_providers,
)
from support.vcsim_peer import PASSWORD, USER, VcsimPeer

TEMPLATE = (
    "<template><name>vcpush</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>pushed to vSphere</description></template>"
)
BUILD_TIMEOUT = 240.0
PUSH_TIMEOUT = 120.0
#: The issue's bound for a refused password or an unreachable vCenter.
FAILURE_BOUND = 180.0
SITE = {"datacenter": "DC0", "datastore": "LocalDS_0", "cluster": "DC0_C0", "folder": "vm", "network": "VM Network"}


def credentials(password: str = PASSWORD) -> str:
    return (
        "<provider_credentials><vsphere_credentials>"
        f"<username>{USER}</username><password>{password}</password>"
        "</vsphere_credentials></provider_credentials>"
    )


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections and never says a word (a hung vCenter)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, name="silent-vcenter", daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for connection in held:
            connection.close()


@pytest.fixture(scope="module")
def vc_daemon(
    module_daemon_factory: DaemonPool, vcsim: VcsimPeer, silent_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Daemon:
    folder = tmp_path_factory.mktemp("vsphere")
    providers = folder / "providers"
    definitions = {
        "vc-lab": {"url": vcsim.url, "ca_bundle": str(vcsim.ca)},
        "vc-closed": {"url": f"https://127.0.0.1:{free_port()}/sdk"},
        "vc-nowhere": {"url": "https://no-such-host.invalid/sdk"},
        "vc-silent": {"url": f"https://127.0.0.1:{silent_port}/sdk"},
    }
    write_providers(providers, "vsphere", {name: {**SITE, **settings} for name, settings in definitions.items()})
    (folder / "vc.xml").write_text(credentials())
    config = mock_config(
        provider_dir=str(providers),
        conductor=True,
        conductor_users=conductor_users(),
        provider_accounts={
            "vc-one": {"provider": "vc-lab", "credentials": str(folder / "vc.xml")},
            "vc-two": {"provider": "vc-lab", "credentials": str(folder / "vc.xml")},
        },
    )
    return module_daemon_factory.make(config, name="vsphere")


def _build(daemon: Daemon, target: str) -> dict[str, Any]:
    answer = daemon.post("/imagefactory/images", data={"targets": target, "template": TEMPLATE})
    assert answer.status_code == 202, answer.text
    build = answer.json()["build"]
    href = build["target_images"][0]["href"]
    detail = daemon.wait_final(href, timeout=BUILD_TIMEOUT)
    assert detail["status"] == "COMPLETED", detail
    with daemon.get(href + "/raw_image", timeout=120) as download:
        assert download.status_code == 200, download.text[:300]
        data = download.content
    return {"href": href, "id": detail["id"], "build_id": build["id"], "data": data}


@pytest.fixture(scope="module")
def vmdk_image(vc_daemon: Daemon) -> dict[str, Any]:
    """A COMPLETED Mock-OS ``vsphere`` target image; ``disk_sha256`` is its vmdk's, as uploaded."""
    image = _build(vc_daemon, "vsphere")
    assert image["data"][:4] == b"KDMV", "a streamOptimized vmdk"
    return dict(image, disk_sha256=hashlib.sha256(image["data"]).hexdigest(), disk_size=len(image["data"]))


@pytest.fixture(scope="module")
def ova_image(vc_daemon: Daemon) -> dict[str, Any]:
    """A COMPLETED Mock-OS ``ova`` target image; ``disk_sha256`` is its vmdk member's."""
    image = _build(vc_daemon, "ova")
    with tarfile.open(fileobj=io.BytesIO(image["data"])) as archive:
        (member,) = [m for m in archive.getmembers() if m.name.endswith(".vmdk")]
        extracted = archive.extractfile(member)
        assert extracted is not None
        disk = extracted.read()
    return dict(image, disk_sha256=hashlib.sha256(disk).hexdigest(), disk_size=len(disk))


def assert_landed(peer: VcsimPeer, done: dict[str, Any], target: dict[str, Any], uploads_before: int) -> None:
    """The VM is a template in the folder, named after the template and the push; vcsim got the image's bytes."""
    assert done["status"] == "COMPLETED", done
    assert done["completed"] == 100
    vms = peer.vms()
    vm = vms.get(done["identifier_on_provider"])
    assert vm is not None, f"{done['identifier_on_provider']} not in {sorted(vms)}"
    assert vm["name"] == f"vcpush-{done['id'][:8]}"
    assert vm["template"] is True and vm["folder"] == "vm"
    assert peer.proxy is not None
    uploads = peer.proxy.uploads[uploads_before:]
    assert [(u.size, u.sha256) for u in uploads] == [(target["disk_size"], target["disk_sha256"])], uploads
    assert uploads[0].session, "the disk went up with the vCenter session's cookie"


def uploads(peer: VcsimPeer) -> int:
    assert peer.proxy is not None
    return len(peer.proxy.uploads)


# -- tests ---------------------------------------------------------------------


@pytest.mark.parametrize("image_name", ["vmdk_image", "ova_image"])
def test_a_push_imports_the_image_as_a_template_vm(
    vc_daemon: Daemon, vcsim: VcsimPeer, image_name: str, request: pytest.FixtureRequest
) -> None:
    """A vmdk and an OVA each become a template VM whose uploaded disk is the image's, byte for byte."""
    target = request.getfixturevalue(image_name)
    before = uploads(vcsim)
    started = push(vc_daemon, target, "vc-lab", credentials())
    done = vc_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    assert_landed(vcsim, done, target, before)
    assert done["provider"] == "vc-lab" and done["provider_account_identifier"] == USER
    assert done["identifier_on_provider"].startswith("vm-")
    log = builder_log(vc_daemon, started["id"])
    assert f"created VM {done['identifier_on_provider']}" in log and "is a template in folder vm" in log


def test_a_wrong_password_fails_with_vcenters_refusal(
    vc_daemon: Daemon, vcsim: VcsimPeer, vmdk_image: dict[str, Any]
) -> None:
    """A refused password ends FAILED within the bound, saying vCenter refused; no VM is made."""
    begun = time.monotonic()
    started = push(vc_daemon, vmdk_image, "vc-lab", credentials("not-the-password"))
    done = vc_daemon.wait_final(started["href"], timeout=FAILURE_BOUND)
    assert done["status"] == "FAILED", done
    assert time.monotonic() - begun < FAILURE_BOUND
    assert done["status_detail"] == "vc-lab: log in failed: vCenter refused the credentials (InvalidLogin)"
    assert vcsim.vms_named(started["id"][:8]) == []


def test_an_unreachable_vcenter_fails_within_three_minutes(vc_daemon: Daemon, vmdk_image: dict[str, Any]) -> None:
    """A refused connection, an unresolvable host and a silent one all end FAILED with a reason within 3 minutes."""
    begun = time.monotonic()
    names = ("vc-closed", "vc-nowhere", "vc-silent")
    started = {name: push(vc_daemon, vmdk_image, name, credentials()) for name in names}
    for name, pushed in started.items():
        done = vc_daemon.wait_final(pushed["href"], timeout=FAILURE_BOUND + 10)
        took = time.monotonic() - begun
        assert done["status"] == "FAILED", done
        assert took < FAILURE_BOUND, took
        assert done["status_detail"].startswith(f"{name}: log in failed: cannot reach the endpoint: "), done


def test_a_failed_upload_destroys_the_half_made_vm(
    vc_daemon: Daemon, vcsim: VcsimPeer, vmdk_image: dict[str, Any]
) -> None:
    """The host refusing the disk ends the push FAILED with its words, and the VM it made is destroyed."""
    assert vcsim.proxy is not None
    vcsim.proxy.mode = "fail"
    try:
        started = push(vc_daemon, vmdk_image, "vc-lab", credentials())
        done = vc_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    finally:
        vcsim.proxy.mode = ""
    assert done["status"] == "FAILED", done
    assert done["status_detail"].startswith("vc-lab: upload the disk failed: the host refused the disk: HTTP 500"), done
    assert vcsim.vms_named(started["id"][:8]) == [], "the failed push destroyed its VM"
    log = builder_log(vc_daemon, started["id"])
    assert "created VM vm-" in log and "destroyed VM vm-" in log


def test_a_cancelled_push_destroys_its_vm(vc_daemon: Daemon, vcsim: VcsimPeer, vmdk_image: dict[str, Any]) -> None:
    """Cancelled while its disk goes up, a push ends FAILED "cancelled by a client" and its VM is destroyed."""
    proxy = vcsim.proxy
    assert proxy is not None
    proxy.mode, proxy.release = "stall", type(proxy.release)()
    stalled = proxy.stalled
    try:
        started = push(vc_daemon, vmdk_image, "vc-lab", credentials())
        deadline = time.monotonic() + PUSH_TIMEOUT
        while proxy.stalled == stalled and time.monotonic() < deadline:
            time.sleep(0.05)
        made = vcsim.vms_named(started["id"][:8])
        assert len(made) == 1 and made[0]["template"] is False, made
        cancel = vc_daemon.delete(f"/imagefactory/builders/{started['id']}")
        assert 200 <= cancel.status_code < 300, cancel.text
        done = vc_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
        assert done["status"] == "FAILED" and done["status_detail"] == "cancelled by a client", done
        deadline = time.monotonic() + 60
        while vcsim.vms_named(started["id"][:8]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proxy.mode = ""
        proxy.release.set()
    assert vcsim.vms_named(started["id"][:8]) == [], "the cancelled push destroyed its VM"


def test_conductor_pushes_to_two_accounts_and_delete_destroys_the_vm(
    vc_daemon: Daemon, vcsim: VcsimPeer, vmdk_image: dict[str, Any]
) -> None:
    """A multi-push to both accounts makes two templates; the Conductor DELETE destroys a VM (or finds it gone)."""
    started = conductor_call(
        vc_daemon,
        "POST",
        "/provider_images",
        f"<provider_image><target_image_id>{vmdk_image['id']}</target_image_id>"
        "<provider_account>vc-one,vc-two</provider_account></provider_image>",
    )
    ids = [element.get("id") for element in started]
    assert len(ids) == 2, etree.tostring(started)
    done = {pid: vc_daemon.wait_final(f"/imagefactory/builders/{pid}", timeout=PUSH_TIMEOUT) for pid in ids}
    vms = vcsim.vms()
    for document in done.values():
        assert document["status"] == "COMPLETED", document
        assert vms[document["identifier_on_provider"]]["template"] is True
    gone, kept = ids
    vm_id = done[gone]["identifier_on_provider"]
    deleted = conductor_call(vc_daemon, "DELETE", f"/provider_images/{gone}")
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("target_identifier") == vm_id
    vms = vcsim.vms()
    assert vm_id not in vms, "the DELETE destroyed the VM"
    assert done[kept]["identifier_on_provider"] in vms
    vcsim.destroy(done[kept]["identifier_on_provider"])
    deleted = conductor_call(vc_daemon, "DELETE", f"/provider_images/{kept}")
    assert deleted.findtext("status") == "DELETED", "a VM already destroyed by hand is deleted all the same"


def test_the_cli_pushes_to_a_vsphere_provider(
    vc_daemon: Daemon, vcsim: VcsimPeer, vmdk_image: dict[str, Any], tmp_path: Path
) -> None:
    """``imagefactory-cli push --provider vc-lab --credentials FILE --wait`` makes the template; no secret printed."""
    (tmp_path / "vc.xml").write_text(credentials())
    before = uploads(vcsim)
    result = cli_push(vc_daemon, tmp_path, "vc-lab", tmp_path / "vc.xml", vmdk_image["id"], PUSH_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    (done,) = json.loads(result.stdout)
    assert done["provider"] == "vc-lab"
    assert_landed(vcsim, done, vmdk_image, before)


def test_no_secret_anywhere(vc_daemon: Daemon, vcsim: VcsimPeer) -> None:
    """Last: the daemon's log, output, state files and answers hold neither the password nor a lease's URL."""
    said = everything_said(vc_daemon)
    assert PASSWORD not in said
    assert vcsim.proxy is not None and vcsim.proxy.uploads
    for upload in vcsim.proxy.uploads:
        assert upload.path not in said, "a lease's URL lets anyone upload while it lasts"
