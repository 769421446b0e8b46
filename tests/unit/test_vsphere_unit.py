"""The vSphere provider on fakes: credentials, provider files, the disk source, the upload, the push's clean-up.

Calls run inline (InlineDoor), time is a Clock, pyVmomi's calls are replaced
by fakes and the upload's connection by one that keeps what it is sent; the
real vCenter simulator is tests/integration/test_vsphere_vcsim.py's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import ssl
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim, vmodl
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imgfac_twisted.config import Config
from imgfac_twisted.errors import ConfigError, InvalidCredentials
from imgfac_twisted.providers import PushResult, vsphere_push, vsphere_upload
from imgfac_twisted.providers.vsphere import VSphereProvider
from imgfac_twisted.providers.vsphere_calls import Inventory, VSphereError, call, describe, device_url
from imgfac_twisted.providers.vsphere_disk import DiskError, DiskSource, disk_source
from imgfac_twisted.providers.vsphere_sites import load_sites, parse_site
from imgfac_twisted.providers.vsphere_upload import DiskUpload
from imgfac_twisted.registry import PluginEnvironment
from imgfac_twisted.targets.ovf import descriptor
from imgfac_twisted.testing import InlineDoor
from support.push_fakes import IMAGE, PushJob

SECRET = "vc-s3cr3t-Distinctive-4b1d"
SITE = {
    "name": "vc-lab",
    "type": "vsphere",
    "url": "https://vcenter.example/sdk",
    "datacenter": "DC0",
    "datastore": "LocalDS_0",
    "cluster": "DC0_C0",
}


def credentials_xml(**fields: str | None) -> str:
    values = {"username": "administrator@vsphere.local", "password": SECRET, **fields}
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in values.items() if value is not None)
    return f"<provider_credentials><vsphere_credentials>{inner}</vsphere_credentials></provider_credentials>"


def make_provider(tmp_path: Path, clock: Clock | None = None, **site: str) -> VSphereProvider:
    folder = tmp_path / "providers"
    folder.mkdir(exist_ok=True)
    (folder / "vc-lab.json").write_text(json.dumps({**SITE, **site}))
    environment = PluginEnvironment(Config(provider_dir=str(folder)), clock or Clock(), InlineDoor())
    return VSphereProvider(environment)


def vmdk_bytes(capacity: int, body: bytes = b"") -> bytes:
    """A file starting as a sparse extent header would: the magic, a version, flags, the capacity in sectors."""
    header = b"KDMV" + struct.pack("<IIQ", 3, 3, capacity // 512)
    return header.ljust(512, b"\0") + body


# -- credentials and provider files -------------------------------------------------


def test_credentials_show_only_the_user(tmp_path: Path) -> None:
    credentials = make_provider(tmp_path).parse_credentials(credentials_xml())
    assert credentials.account_identifier == "administrator@vsphere.local"
    assert credentials.secrets["password"] == SECRET and SECRET not in repr(credentials)


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        (credentials_xml(password=None), "<vsphere_credentials> lacks <password>"),
        (credentials_xml(username=None), "<vsphere_credentials> lacks <username>"),
        ("<provider_credentials><ec2_credentials/></provider_credentials>", "must hold a <vsphere_credentials>"),
        (credentials_xml(password="a&#9;b"), "must be printable"),
    ],
)
def test_unusable_credentials_say_what_is_wrong_never_a_value(tmp_path: Path, xml: str, says: str) -> None:
    with pytest.raises(InvalidCredentials) as raised:
        make_provider(tmp_path).parse_credentials(xml)
    assert says in raised.value.message and SECRET not in raised.value.message


def test_a_site_file_gives_the_provider_its_defaults(tmp_path: Path) -> None:
    provider = make_provider(tmp_path)
    assert provider.provider_names() == ["vc-lab"] and provider.serves("vc-lab")
    site = provider.site("vc-lab")
    assert (site.folder, site.network, site.ca_bundle, site.host, site.port) == (
        "vm",
        None,
        None,
        "vcenter.example",
        443,
    )
    assert provider.location("vc-lab") == ("https://vcenter.example/sdk", "DC0")
    assert provider.accepts_target("vsphere") and provider.accepts_target("ova")
    assert not provider.accepts_target("openstack-kvm") and not provider.accepts_target("mock")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"datastore": None}, "lacks 'datastore'"),
        ({"colour": "blue"}, "unknown key(s) 'colour'"),
        ({"url": "ftp://vc/sdk"}, "must be an http:// or https:// URL"),
        ({"url": "https://root:pw@vc/sdk"}, "must not hold credentials"),
        ({"name": "ec2-east"}, "is a built-in provider's name"),
        ({"ca_bundle": "/no/such/file.pem"}, "is not a file"),
        ({"cluster": 7}, "'cluster' must be a string"),
        ({"folder": " "}, "folder must be a printable name"),
    ],
)
def test_a_wrong_site_file_is_a_config_error(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    document = {key: value for key, value in {**SITE, **change}.items() if value is not None}
    (tmp_path / "vc.json").write_text(json.dumps(document))
    with pytest.raises(ConfigError) as raised:
        load_sites(str(tmp_path))
    assert says in str(raised.value)
    assert "root:pw" not in str(raised.value)


def test_other_types_and_duplicates(tmp_path: Path) -> None:
    assert parse_site({"type": "openstack", "name": "os"}) is None
    (tmp_path / "a.json").write_text(json.dumps(SITE))
    (tmp_path / "b.json").write_text(json.dumps(SITE))
    with pytest.raises(ConfigError, match="is already defined by"):
        load_sites(str(tmp_path))
    assert load_sites(str(tmp_path / "missing")) == {}


# -- the disk source -------------------------------------------------------------------


def test_a_vmdk_gets_the_ova_targets_descriptor_with_its_capacity(tmp_path: Path) -> None:
    path = tmp_path / "disk.vmdk"
    path.write_bytes(vmdk_bytes(2 * 1024**3, b"x" * 1000))
    source = disk_source(str(path), "vsphere", "f14jeos-12345678", IMAGE)
    assert (source.offset, source.size, source.file_name) == (0, 1512, "f14jeos-12345678-disk1.vmdk")
    expected = descriptor("f14jeos-12345678", "Fedora 14 x86_64", source.file_name, 1512, 2 * 1024**3)
    assert source.descriptor == expected.decode()


def test_a_file_that_is_no_vmdk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disk.vmdk"
    path.write_bytes(b"QFI\xfb" + b"\0" * 600)
    with pytest.raises(DiskError, match="not a streamOptimized vmdk"):
        disk_source(str(path), "vsphere", "n", IMAGE)
    with pytest.raises(DiskError, match="take vsphere, ova images"):
        disk_source(str(path), "openstack-kvm", "n", IMAGE)


def make_ova(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_an_ova_gives_its_own_descriptor_and_its_disk_in_place(tmp_path: Path) -> None:
    disk = vmdk_bytes(1024**3, os.urandom(5000))
    ovf = descriptor("f14jeos", "Fedora 14 x86_64", "f14jeos-disk1.vmdk", len(disk), 1024**3)
    path = tmp_path / "image.ova"
    make_ova(path, {"f14jeos.ovf": ovf, "f14jeos-disk1.vmdk": disk})
    source = disk_source(str(path), "ova", "ignored", IMAGE)
    assert source.descriptor == ovf.decode() and source.file_name == "f14jeos-disk1.vmdk"
    with open(path, "rb") as stream:
        stream.seek(source.offset)
        assert stream.read(source.size) == disk, "the member's bytes, read in place"


def test_an_ova_without_the_disk_its_descriptor_names_is_refused(tmp_path: Path) -> None:
    ovf = descriptor("x", "Fedora 14 x86_64", "x-disk1.vmdk", 10, 1024)
    path = tmp_path / "image.ova"
    make_ova(path, {"x.ovf": ovf, "other.vmdk": b"0123456789"})
    with pytest.raises(DiskError, match="lacks 'x-disk1.vmdk'"):
        disk_source(str(path), "ova", "x", IMAGE)


# -- calls and their errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (vim.fault.InvalidLogin(msg="Login failure"), "vCenter refused the credentials (InvalidLogin)"),
        (ConnectionRefusedError(111, "Connection refused"), "cannot reach the endpoint: [Errno 111]"),
        (ssl.SSLCertVerificationError("certificate verify failed"), "cannot reach the endpoint: "),
        (vim.fault.DuplicateName(msg="The name 'x' already exists."), "DuplicateName: The name 'x' already exists."),
    ],
)
def test_errors_are_told_in_a_few_words(error: Exception, says: str) -> None:
    assert describe(error).startswith(says)


def test_a_call_names_the_site_and_the_call_and_hides_the_password() -> None:
    def leaky() -> None:
        raise RuntimeError(f"bad password {SECRET}")

    with pytest.raises(VSphereError) as raised:
        call("vc-lab", "log in", (SECRET,), leaky)
    assert raised.value.message == "vc-lab: log in failed: RuntimeError: bad password ***"


class FakeDevice:
    def __init__(self, url: str, disk: bool = True) -> None:
        self.url, self.disk, self.create = url, disk, False


class FakeLease:
    def __init__(self, *urls: str) -> None:
        self.info = type("Info", (), {"deviceUrl": [FakeDevice(url) for url in urls]})()


def test_the_device_url_gets_the_sites_host_where_vcenter_wrote_a_star(tmp_path: Path) -> None:
    site = make_provider(tmp_path, url="https://vc.example:8443/sdk").site("vc-lab")
    assert device_url(FakeLease("https://*/nfc/52ab/disk-0.vmdk"), site) == (
        "https://vc.example:8443/nfc/52ab/disk-0.vmdk",
        False,
    )
    assert device_url(FakeLease("https://esx1.example/nfc/52ab/disk-0.vmdk"), site)[0].startswith("https://esx1.")


# -- the upload --------------------------------------------------------------------------------


class FakeConnection:
    """What the upload writes to: keeps the request line, headers and body; answers ``status``."""

    def __init__(self, status: int = 200, fail_after: int | None = None) -> None:
        self.status, self.fail_after = status, fail_after
        self.request: tuple[str, str] = ("", "")
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.closed = False

    def putrequest(self, method: str, path: str) -> None:
        self.request = (method, path)

    def putheader(self, name: str, value: str) -> None:
        self.headers[name] = value

    def endheaders(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.body) >= self.fail_after:
            raise BrokenPipeError(32, "Broken pipe")
        self.body += data

    def getresponse(self) -> Any:
        status = self.status
        return type("Answer", (), {"status": status, "reason": "Whatever", "read": lambda self, n=-1: b"no room"})()

    def close(self) -> None:
        self.closed = True


def source_in(tmp_path: Path, size: int, offset: int = 0) -> tuple[DiskSource, bytes]:
    data = os.urandom(offset + size + 100)
    (tmp_path / "file").write_bytes(data)
    source = DiskSource(descriptor="", path=str(tmp_path / "file"), offset=offset, size=size, file_name="d.vmdk")
    return source, data[offset : offset + size]


def test_the_upload_streams_the_disk_in_pieces_from_its_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The body is the bytes from the offset, as a streamed vmdk; a long upload keeps the lease alive."""
    source, disk = source_in(tmp_path, 3 * 1024 * 1024 + 7, offset=1536)
    connection = FakeConnection()
    alive: list[int] = []
    upload = DiskUpload(source, "https://h:443/nfc/1/disk-0.vmdk?x=1", False, None, alive.append)
    monkeypatch.setattr(upload, "_connect", lambda: connection)
    monkeypatch.setattr(vsphere_upload, "KEEPALIVE_EVERY", 0.0)
    upload.run()
    assert connection.request == ("POST", "/nfc/1/disk-0.vmdk?x=1")
    assert connection.headers == {"Content-Type": vsphere_upload.STREAM_VMDK, "Content-Length": str(len(disk))}
    assert hashlib.sha256(connection.body).digest() == hashlib.sha256(disk).digest()
    assert upload.sent == len(disk) and upload.percent() == 100
    assert alive and alive == sorted(alive), "HttpNfcLeaseProgress on the way, never backwards"


def test_a_refused_upload_says_the_hosts_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = source_in(tmp_path, 1000)
    upload = DiskUpload(source, "https://h/nfc/1/d", True, None, lambda percent: None)
    monkeypatch.setattr(upload, "_connect", lambda: FakeConnection(status=507))
    with pytest.raises(Exception, match="the host refused the disk: HTTP 507 Whatever no room"):
        upload.run()


def test_a_host_that_stops_reading_is_heard_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken pipe mid-body: the host's answer when it sent one, else the broken pipe."""
    source, _ = source_in(tmp_path, 3 * 1024 * 1024)
    upload = DiskUpload(source, "https://h/nfc/1/d", True, None, lambda percent: None)
    monkeypatch.setattr(upload, "_connect", lambda: FakeConnection(status=403, fail_after=1024 * 1024))
    with pytest.raises(Exception, match="the host refused the disk: HTTP 403"):
        upload.run()

    silent = FakeConnection(fail_after=0)
    monkeypatch.setattr(silent, "getresponse", lambda: (_ for _ in ()).throw(ConnectionResetError(104, "reset")))
    upload = DiskUpload(source, "https://h/nfc/1/d", True, None, lambda percent: None)
    monkeypatch.setattr(upload, "_connect", lambda: silent)
    with pytest.raises(Exception, match=r"cannot send the disk to h: \[Errno 32\] Broken pipe"):
        upload.run()


def test_a_stopped_upload_sends_nothing_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = source_in(tmp_path, 3 * 1024 * 1024)
    connection = FakeConnection()
    upload = DiskUpload(source, "https://h/nfc/1/d", True, None, lambda percent: None)
    monkeypatch.setattr(upload, "_connect", lambda: connection)
    upload.stop()
    with pytest.raises(vsphere_upload.UploadStopped):
        upload.run()
    assert connection.body == b"" and connection.closed


# -- the push and its clean-up ------------------------------------------------------------------


class FakeVCenter:
    """pyVmomi's side of a push: records what was called; ``fail`` names the step that raises."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[str] = []
        self.lease = FakeLease("https://*/nfc/lease-1/disk-0.vmdk")
        self.vm = type("VM", (), {"_moId": "vm-70"})()

    def step(self, name: str, result: Any = None) -> Any:
        self.calls.append(name)
        if self.fail == name:
            raise vmodl.fault.SystemError(msg=f"{name} broke")
        return result

    def install(self, monkeypatch: pytest.MonkeyPatch, connection: FakeConnection) -> None:
        inventory = Inventory("si", None, None, None, None, None, cookie='vmware_soap_session="s1"; Path=/')
        patches = {
            "connect": lambda site, credentials: self.step("connect", inventory),
            "import_spec": lambda inventory, text, name: self.step(f"import_spec {name}", "spec"),
            "start_import": lambda inventory, spec: self.step("start_import", self.lease),
            "finish_import": lambda lease, vm: self.step("finish_import", vm._moId),
            "abort_lease": lambda lease, reason: self.step(f"abort_lease: {reason}"),
            "destroy_vm": lambda service, moid: self.step(f"destroy_vm {moid}", True),
            "disconnect": lambda inventory: self.step("disconnect"),
            "lease_vm": lambda lease: self.vm,
        }
        for name, fake in patches.items():
            monkeypatch.setattr(vsphere_push, name, fake)
        monkeypatch.setattr(DiskUpload, "_connect", lambda upload: connection)


def Job(path: str, clock: Clock, target: str = "vsphere") -> PushJob:
    """What the dispatcher hands a push to vc-lab."""
    return PushJob(path, target, "vc-lab", builder_id="0a1b2c3d-prov", reactor=clock)


def run_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vcenter: FakeVCenter, connection: FakeConnection
) -> tuple[Any, Job, bytes]:
    disk = vmdk_bytes(1024**3, os.urandom(2 * 1024 * 1024))
    path = tmp_path / "disk.vmdk"
    path.write_bytes(disk)
    clock = Clock()
    vcenter.install(monkeypatch, connection)
    provider = make_provider(tmp_path, clock)
    job = Job(str(path), clock)
    found: list[Any] = []
    provider.push(job, provider.parse_credentials(credentials_xml())).addBoth(found.append)
    for _ in range(100):
        if found:
            break
        clock.advance(1)
    assert found, "the push did not finish"
    return found[0], job, disk


def test_a_push_imports_uploads_completes_and_makes_a_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The VM is named after the template and the push; the disk goes to the site's host; the id is the VM's."""
    vcenter, connection = FakeVCenter(), FakeConnection()
    result, job, disk = run_push(tmp_path, monkeypatch, vcenter, connection)
    assert isinstance(result, PushResult) and result.identifier == "vm-70", result
    assert vcenter.calls == ["connect", "import_spec f14jeos-0a1b2c3d", "start_import", "finish_import", "disconnect"]
    assert connection.request == ("POST", "/nfc/lease-1/disk-0.vmdk") and bytes(connection.body) == disk
    assert connection.headers["Cookie"] == 'vmware_soap_session="s1"; Path=/', "the session goes to the vCenter"
    assert job.percents[-2:] == [95, 100] and job.percents == sorted(job.percents)
    assert "created VM vm-70; sending the disk to vcenter.example:443" in job.logs
    assert all("lease-1" not in line for line in job.logs), "the lease's URL is not shown"
    assert all(SECRET not in line for line in job.logs)


def test_a_refused_upload_aborts_the_lease_and_destroys_the_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vcenter = FakeVCenter()
    result, job, _ = run_push(tmp_path, monkeypatch, vcenter, FakeConnection(status=500))
    assert isinstance(result, Failure) and result.check(VSphereError)
    assert result.value.message.startswith("vc-lab: upload the disk failed: the host refused the disk: HTTP 500")
    assert vcenter.calls[-3:] == [f"abort_lease: {result.value.message}", "destroy_vm vm-70", "disconnect"]
    assert "destroyed VM vm-70" in job.logs


def test_a_failing_template_mark_destroys_the_vm_and_a_failed_destroy_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vcenter = FakeVCenter(fail="finish_import")
    result, _, _ = run_push(tmp_path, monkeypatch, vcenter, FakeConnection())
    assert isinstance(result, Failure)
    assert result.value.message == "vc-lab: complete the import failed: SystemError: finish_import broke"
    assert "destroy_vm vm-70" in vcenter.calls

    vcenter = FakeVCenter(fail="destroy_vm vm-70")
    result, job, _ = run_push(tmp_path, monkeypatch, vcenter, FakeConnection(status=500))
    assert isinstance(result, Failure)
    assert result.value.message.endswith(
        "; VM vm-70 could not be destroyed (vc-lab: destroy the VM failed: SystemError: destroy_vm vm-70 broke): "
        "destroy it by hand"
    )


def test_a_refused_login_makes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vcenter = FakeVCenter(fail="connect")
    result, _, _ = run_push(tmp_path, monkeypatch, vcenter, FakeConnection())
    assert isinstance(result, Failure) and result.value.message == "vc-lab: log in failed: SystemError: connect broke"
    assert vcenter.calls == ["connect"]


def test_delete_without_credentials_fails_saying_why(tmp_path: Path) -> None:
    found: list[Any] = []
    make_provider(tmp_path).delete("vc-lab", "vm-70", {}, None).addBoth(found.append)
    assert isinstance(found[0], Failure) and "cannot be destroyed" in found[0].value.message


class StallingDoor(InlineDoor):
    """Runs calls inline, except the disk's upload, which never returns (a stuck host)."""

    def __init__(self) -> None:
        self.stalled: list[Deferred[Any]] = []

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        if len(args) > 1 and args[1] == "upload the disk":
            self.stalled.append(Deferred())
            return self.stalled[-1]
        return super().run(fn, *args, **kwargs)


def test_a_cancelled_push_stops_the_upload_aborts_the_lease_and_destroys_the_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled mid-upload: the upload is told to stop, and after a short wait the lease and VM are cleaned up."""
    vcenter, clock, door = FakeVCenter(), Clock(), StallingDoor()
    vcenter.install(monkeypatch, FakeConnection())
    stops: list[bool] = []
    monkeypatch.setattr(DiskUpload, "stop", lambda upload: stops.append(True))
    path = tmp_path / "disk.vmdk"
    path.write_bytes(vmdk_bytes(1024**3, b"z" * 4096))
    folder = tmp_path / "providers"
    folder.mkdir()
    (folder / "vc-lab.json").write_text(json.dumps(SITE))
    provider = VSphereProvider(PluginEnvironment(Config(provider_dir=str(folder)), clock, door))
    found: list[Any] = []
    pushing = provider.push(Job(str(path), clock), provider.parse_credentials(credentials_xml()))
    pushing.addBoth(found.append)
    assert door.stalled and not found, "the push waits on its upload"
    pushing.cancel()
    assert stops == [True] and not found, "the upload's thread is given a moment to return"
    clock.advance(vsphere_push.SETTLE_WAIT + 1)
    assert isinstance(found[0], Failure) and found[0].check(CancelledError)
    assert vcenter.calls[-3:] == ["abort_lease: the push was cancelled", "destroy_vm vm-70", "disconnect"]
