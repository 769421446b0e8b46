"""The EC2 provider on fakes: names, definition files, credentials, blocks, errors, retries, whole pushes.

No network: the boto3 clients are replaced by an in-memory fake cloud, SDK
calls run inline (or when the test says so), and time is a Clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tracemalloc
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
    SSLError,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imgfac_twisted.errors import ConfigError, ImageFactoryError, InvalidCredentials
from imgfac_twisted.model import Builder, Image
from imgfac_twisted.providers import Credentials, PushResult
from imgfac_twisted.providers.ec2_ami import ami_name, architecture_of
from imgfac_twisted.providers.ec2_blocks import BlockReader, block_checksum, volume_size_gib
from imgfac_twisted.providers.ec2_calls import (
    Ec2ConnectionError,
    Ec2ServiceError,
    RetryPolicy,
    classify,
    failure_for,
)
from imgfac_twisted.providers.ec2_endpoints import AWS_REGIONS, load_definitions, parse_definition
from imgfac_twisted.testing import InlineDoor
from support.ec2_fakes import FakeCloud, client_error, make_provider
from support.push_fakes import HeldDoor, PushJob

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-DISTINCTIVE"
ACCESS = "AKIDEXAMPLE1234"


def credentials_xml(
    account: str | None = "123456789012", access: str = ACCESS, secret: str = SECRET, extra: str = ""
) -> str:
    account_xml = f"<account_number>{account}</account_number>" if account is not None else ""
    return (
        f"<provider_credentials><ec2_credentials>{account_xml}<access_key>{access}</access_key>"
        f"<secret_access_key>{secret}</secret_access_key>{extra}</ec2_credentials></provider_credentials>"
    )


def write_definition(folder, file_name: str, document: Any) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    (folder / file_name).write_text(text, encoding="utf-8")


MOTO_EAST = {"name": "moto-east", "type": "ec2", "region": "us-east-1", "endpoint_url": "http://127.0.0.1:5000"}


# -- provider names ----------------------------------------------------------


def test_every_aws_region_is_a_provider(tmp_path):
    provider = make_provider(tmp_path)
    for region in (
        "us-east-1",
        "us-west-2",
        "eu-central-1",
        "ap-southeast-4",
        "me-central-1",
        "af-south-1",
        "il-central-1",
        "mx-central-1",
        "ca-west-1",
        "ap-southeast-7",
        "sa-east-1",
    ):
        assert provider.serves(f"ec2-{region}"), region
    assert len(AWS_REGIONS) == len(set(AWS_REGIONS)) >= 34
    assert not provider.serves("ec2-moon-1")
    assert not provider.serves("mock")
    assert not provider.serves("us-east-1")
    assert "ec2-us-east-1" in provider.provider_names()


def test_region_list_has_no_typo():
    """Every region of the fixed list is one botocore knows for both EC2 and EBS."""
    import boto3

    session = boto3.session.Session()
    known = set(session.get_available_regions("ec2")) & set(session.get_available_regions("ebs"))
    assert set(AWS_REGIONS) <= known, set(AWS_REGIONS) - known


# -- provider definition files ----------------------------------------------


def test_definitions_are_loaded_from_the_folder(tmp_path):
    write_definition(tmp_path, "moto.json", MOTO_EAST)
    write_definition(
        tmp_path,
        "other.json",
        {
            **MOTO_EAST,
            "name": "euca",
            "region": "eucalyptus",
            "endpoint_url": "https://cloud.example:8773/services/compute",
            "ebs_endpoint_url": "https://ebs.example",
            "_comment": "ours",
        },
    )
    write_definition(tmp_path, "openstack.json", {"name": "os1", "type": "openstack"})  # another plug-in's
    write_definition(tmp_path, "README.txt", "not a definition")
    write_definition(tmp_path, ".hidden.json", "{broken")
    found = load_definitions(str(tmp_path))
    assert sorted(found) == ["euca", "moto-east"]
    assert found["moto-east"].endpoint_url == "http://127.0.0.1:5000"
    assert found["moto-east"].region == "us-east-1"
    assert found["moto-east"].source == str(tmp_path / "moto.json")
    assert found["euca"].ebs_endpoint_url == "https://ebs.example"
    provider = make_provider(tmp_path)
    assert provider.serves("moto-east") and provider.serves("euca") and not provider.serves("os1")


def test_a_missing_folder_is_fine(tmp_path):
    assert load_definitions(str(tmp_path / "nowhere")) == {}
    assert make_provider(tmp_path / "nowhere").serves("ec2-us-east-1")


def test_a_folder_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        load_definitions(str(tmp_path / "file"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", r"bad\.json: is not valid JSON: .* line 1"),
        ("[1, 2]", r"bad\.json: must be a JSON object"),
        (json.dumps({"name": "x", "region": "us-east-1"}), r'bad\.json: lacks "type"'),
        (json.dumps({"type": "ec2", "name": "x"}), r"bad\.json: lacks 'region', 'endpoint_url'"),
        (json.dumps({**MOTO_EAST, "endpoint": "typo"}), r"bad\.json: unknown key\(s\) 'endpoint'"),
        (json.dumps({**MOTO_EAST, "region": 5}), r"bad\.json: 'region' must be a string"),
        (json.dumps({**MOTO_EAST, "name": "has space"}), r"bad\.json: name 'has space' must be"),
        (json.dumps({**MOTO_EAST, "region": "US East"}), r"bad\.json: region 'US East' must be"),
        (json.dumps({**MOTO_EAST, "endpoint_url": "ftp://x"}), r"bad\.json: endpoint_url 'ftp://x' must be an http"),
        (json.dumps({**MOTO_EAST, "endpoint_url": "http://"}), r"bad\.json: endpoint_url 'http://' names no host"),
        (
            json.dumps({**MOTO_EAST, "ca_bundle": "/no/such/ca.pem"}),
            r"bad\.json: ca_bundle '/no/such/ca.pem' is not a file",
        ),
        (json.dumps({**MOTO_EAST, "name": "ec2-us-east-1"}), r"bad\.json: name 'ec2-us-east-1' is a built-in"),
        (json.dumps({**MOTO_EAST, "name": "mock"}), r"bad\.json: name 'mock' is a built-in"),
        ("\xff\xfe", r"bad\.json: is not (UTF-8 text|valid JSON)"),
    ],
)
def test_a_bad_definition_is_a_config_error_naming_the_file(tmp_path, text, expected):
    (tmp_path / "bad.json").write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    with pytest.raises(ConfigError, match=expected) as caught:
        load_definitions(str(tmp_path))
    assert str(tmp_path / "bad.json") in caught.value.message
    with pytest.raises(ConfigError):
        make_provider(tmp_path)


def test_a_url_with_a_password_is_refused_without_echoing_it(tmp_path):
    write_definition(tmp_path, "p.json", {**MOTO_EAST, "endpoint_url": "http://user:hunter2@127.0.0.1:5000"})
    with pytest.raises(ConfigError, match="must not hold credentials") as caught:
        load_definitions(str(tmp_path))
    assert "hunter2" not in caught.value.message


def test_duplicate_names_are_an_error_naming_both_files(tmp_path):
    write_definition(tmp_path, "a.json", MOTO_EAST)
    write_definition(tmp_path, "b.json", {**MOTO_EAST, "endpoint_url": "http://127.0.0.1:6000"})
    with pytest.raises(ConfigError, match=r"b\.json: name 'moto-east' is already defined by .*a\.json"):
        load_definitions(str(tmp_path))


def test_every_bad_file_is_reported_at_once(tmp_path):
    write_definition(tmp_path, "one.json", "{")
    write_definition(tmp_path, "two.json", {"type": "ec2"})
    with pytest.raises(ConfigError) as caught:
        load_definitions(str(tmp_path))
    assert "one.json" in caught.value.message and "two.json" in caught.value.message


def test_parse_definition_leaves_other_types_alone():
    assert parse_definition({"type": "gce", "anything": 1}) is None
    with pytest.raises(ValueError, match='"type" must be a string'):
        parse_definition({"type": 3})


# -- credentials -------------------------------------------------------------


def test_credentials_are_parsed_and_the_secret_never_shown(tmp_path):
    provider = make_provider(tmp_path)
    credentials = provider.parse_credentials(
        credentials_xml(extra="<certificate>-----BEGIN CERTIFICATE-----x</certificate><key>-----BEGIN KEY-----y</key>")
    )
    assert credentials.account_identifier == "123456789012"
    assert credentials.secrets == {"access_key": ACCESS, "secret_access_key": SECRET}
    assert SECRET not in repr(credentials) and SECRET not in str(credentials)


def test_without_an_account_number_the_access_key_is_the_account(tmp_path):
    credentials = make_provider(tmp_path).parse_credentials(credentials_xml(account=None))
    assert credentials.account_identifier == ACCESS


@pytest.mark.parametrize(
    "xml, expected",
    [
        (credentials_xml(secret=""), r"lacks <secret_access_key>"),
        (credentials_xml(access=""), r"lacks <access_key>"),
        (credentials_xml(secret="two words" + SECRET), r"<secret_access_key> must be printable"),
        (credentials_xml(access="AK ID"), r"<access_key> must be an access key id"),
        (credentials_xml(account="12 34"), r"<account_number> must be"),
        (
            "<provider_credentials><mock_credentials><username>u</username><password>"
            + SECRET
            + "</password></mock_credentials></provider_credentials>",
            r"must hold a <ec2_credentials> element",
        ),
        ("<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><provider_credentials/>", r"DOCTYPE"),
        ("not xml " + SECRET, r"not well-formed"),
    ],
)
def test_bad_credentials_are_refused_without_echoing_the_secret(tmp_path, xml, expected):
    with pytest.raises(InvalidCredentials, match=expected) as caught:
        make_provider(tmp_path).parse_credentials(xml)
    assert SECRET not in caught.value.message


# -- blocks ------------------------------------------------------------------


def write_sparse(path, size: int, pieces: dict[int, bytes]) -> None:
    with open(path, "wb") as stream:
        stream.truncate(size)
        for offset, data in pieces.items():
            stream.seek(offset)
            stream.write(data)


def all_blocks(reader: BlockReader) -> list:
    reader.open()
    found = []
    try:
        while not reader.exhausted:
            found.extend(reader.next_batch())
    finally:
        reader.close()
    return found


@pytest.mark.parametrize("seek_data", [True, False])
def test_only_blocks_with_data_are_read_out(tmp_path, seek_data):
    path = tmp_path / "disk.raw"
    write_sparse(
        path,
        10 * 1024 * 1024 + 100,
        {
            0: b"\x01" * 10,  # block 0
            512 * 7 + 511: b"\x02\x03",  # spans blocks 7 and 8
            3 * 1024 * 1024: bytes(4096),  # written zeros: skipped
            5 * 1024 * 1024: os.urandom(1024),  # blocks 10240 and 10241
            10 * 1024 * 1024 + 99: b"\x04",  # the short last block, 20480
        },
    )
    reader = BlockReader(str(path), 512)
    reader._seek_data = seek_data
    blocks = all_blocks(reader)
    assert [block.index for block in blocks] == [0, 7, 8, 10240, 10241, 20480]
    assert all(len(block.data) == 512 for block in blocks)
    with open(path, "rb") as stream:
        for block in blocks[:-1]:
            stream.seek(block.index * 512)
            assert block.data == stream.read(512)
    assert blocks[-1].data == bytes(99) + b"\x04" + bytes(412), "the last block is padded with zeros"
    for block in blocks:
        assert block.checksum == base64.b64encode(hashlib.sha256(block.data).digest()).decode()
    assert reader.data_blocks == 6 and reader.zero_blocks >= 8


def test_a_batch_holds_a_bounded_amount_of_data(tmp_path):
    path = tmp_path / "dense.raw"
    path.write_bytes(os.urandom(3 * 1024 * 1024))
    reader = BlockReader(str(path), 512, max_batch_bytes=64 * 1024)
    reader.open()
    try:
        sizes = []
        while not reader.exhausted:
            sizes.append(sum(len(block.data) for block in reader.next_batch()))
    finally:
        reader.close()
    # A batch stops after the piece (1 MiB) that passed the bound.
    assert max(sizes) <= 64 * 1024 + 1024 * 1024
    assert sum(sizes) == 3 * 1024 * 1024


def test_one_call_scans_a_bounded_part_of_a_file_of_zeros(tmp_path):
    path = tmp_path / "zeros.raw"
    path.write_bytes(bytes(8 * 1024 * 1024))  # written zeros: no holes to skip
    reader = BlockReader(str(path), 512, max_scan_bytes=2 * 1024 * 1024)
    reader.open()
    try:
        assert reader.next_batch() == []
        assert reader.position == 2 * 1024 * 1024 and not reader.exhausted
        calls = 1
        while not reader.exhausted:
            assert reader.next_batch() == []
            calls += 1
    finally:
        reader.close()
    assert calls == 4


def test_a_huge_sparse_image_is_read_in_bounded_memory(tmp_path):
    """A 64 GiB sparse image with data scattered over it: every block found, little memory, few reads."""
    path = tmp_path / "huge.raw"
    pieces = {offset: os.urandom(1024 * 1024) for offset in range(0, 64 * 1024**3, 4 * 1024**3)}
    write_sparse(path, 64 * 1024**3, pieces)
    reader = BlockReader(str(path), 524288)
    reader.open()
    count = 0
    tracemalloc.start()
    try:
        while not reader.exhausted:
            count += len(reader.next_batch())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        reader.close()
    assert count == 16 * 2
    assert peak < 8 * 1024 * 1024, peak


def test_checksum_and_volume_size():
    assert block_checksum(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert block_checksum(bytes(512)) == base64.b64encode(hashlib.sha256(bytes(512)).digest()).decode()
    assert volume_size_gib(0) == 1
    assert volume_size_gib(1) == 1
    assert volume_size_gib(1024**3) == 1
    assert volume_size_gib(1024**3 + 1) == 2
    assert volume_size_gib(256 * 1024**2) == 1


def test_architecture_and_ami_name():
    assert architecture_of("x86_64") == "x86_64"
    assert architecture_of("aarch64") == "arm64"
    assert architecture_of("i686") == "i386"
    assert architecture_of(None) == "x86_64"
    assert architecture_of("ppc64le") is None
    name = ami_name("Fedora 14 <jeos>!", "0b7e5a4c-2f0e-4c43-9d55-ec5e7a2c2d3b")
    assert name == "Fedora 14 -jeos-0b7e5a4c-2f0e-4c43-9d55-ec5e7a2c2d3b"
    assert ami_name(None, "id") == "imagefactory-id"
    assert len(ami_name("x" * 500, "0b7e5a4c-2f0e-4c43-9d55-ec5e7a2c2d3b")) <= 128


# -- error mapping and retries -----------------------------------------------


@pytest.mark.parametrize(
    "error, code, transient, connection",
    [
        (client_error("RequestLimitExceeded", status=503), "RequestLimitExceeded", True, False),
        (client_error("Throttling"), "Throttling", True, False),
        (client_error("RequestThrottledException"), "RequestThrottledException", True, False),
        (client_error("InternalError", status=500), "InternalError", True, False),
        (client_error("Whatever", status=502), "Whatever", True, False),
        (client_error("SlowDown", status=429), "SlowDown", True, False),
        (client_error("AuthFailure", status=401), "AuthFailure", False, False),
        (client_error("UnrecognizedClientException", status=403), "UnrecognizedClientException", False, False),
        (client_error("InvalidParameterValue"), "InvalidParameterValue", False, False),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/"), "EndpointConnectionError", True, True),
        (ReadTimeoutError(endpoint_url="http://x/"), "ReadTimeoutError", True, True),
        (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError", True, True),
        (SSLError(endpoint_url="https://x/", error="bad cert"), "SSLError", False, True),
        (ParamValidationError(report="Invalid type for parameter X"), "ParamValidationError", False, False),
    ],
)
def test_errors_are_classified(error, code, transient, connection):
    problem = classify(error)
    assert (problem.code, problem.transient, problem.connection) == (code, transient, connection)


def test_a_failure_names_the_call_code_and_message_without_secrets():
    problem = classify(client_error("AuthFailure", f"key {SECRET} was not accepted", status=401))
    error = failure_for("ec2-us-east-1", "StartSnapshot", problem, attempts=1, elapsed=0.1, secrets=(SECRET,))
    assert isinstance(error, Ec2ServiceError) and isinstance(error, ImageFactoryError)
    assert error.message == "ec2-us-east-1: StartSnapshot failed: AuthFailure: key *** was not accepted"
    assert (error.code, error.action, error.status) == ("AuthFailure", "StartSnapshot", 401)
    refused = failure_for(
        "moto", "StartSnapshot", classify(EndpointConnectionError(endpoint_url="http://h:1/")), attempts=6, elapsed=31.4
    )
    assert isinstance(refused, Ec2ConnectionError)
    assert refused.message.startswith("moto: StartSnapshot failed: cannot reach the endpoint: ")
    assert refused.message.endswith("(after 6 attempts in 31 s)")


def test_backoff_grows_to_a_cap_within_attempts_and_budget():
    policy = RetryPolicy(max_attempts=8, first_delay=1, factor=2, max_delay=20, budget=1000, jitter=0.25)
    assert [policy.delay(n, rand=lambda: 0.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert policy.delay(3, rand=lambda: 1.0) == 3.0
    assert policy.next_delay(7, 0, rand=lambda: 0.0) == 20
    assert policy.next_delay(8, 0) is None, "attempts spent"
    assert RetryPolicy(budget=10).next_delay(1, 9.5, rand=lambda: 0.0) is None, "budget spent"


# -- whole pushes on a fake cloud ---------------------------------------------


def FakeJob(
    tmp_path: Any,
    image_path: str,
    os_arch: str | None = "x86_64",
    target: str = "ec2",
    provider: str = "moto-east",
) -> PushJob:
    """What the dispatcher hands a push; no os_arch: the image's arch is not known (an imported image's is empty)."""
    image = Image(
        id="i", template_id="tpl", name="f14jeos", description=None, os_name="Mock", os_version="1",
        os_arch=os_arch or "", created=0.0,
    )  # fmt: skip
    return PushJob(
        image_path, target, provider, builder_id="6f1c1b8e-0000-4000-8000-000000000001", image=image,
        work_dir=str(tmp_path),
    )  # fmt: skip


class Setup:
    def __init__(
        self,
        tmp_path,
        door: Any = None,
        os_arch: str | None = "aarch64",
        target: str = "ec2",
        image: dict[int, bytes] | None = None,
        size: int = 3 * 1024 * 1024,
        **settings: Any,
    ) -> None:
        folder = tmp_path / "providers"
        folder.mkdir()
        write_definition(folder, "moto.json", MOTO_EAST)
        self.path = tmp_path / "disk.raw"
        self.pieces = (
            image
            if image is not None
            else {
                0: b"\xeb\x63\x90" + bytes(507) + b"\x55\xaa",
                1024 * 1024: os.urandom(4096),
                size - 700: os.urandom(700),
            }
        )
        write_sparse(self.path, size, self.pieces)
        self.clock = Clock()
        self.cloud = FakeCloud()
        self.door = door or InlineDoor()
        self.provider = make_provider(folder, self.cloud, self.door, self.clock, **settings)
        self.job = FakeJob(tmp_path, str(self.path), os_arch=os_arch, target=target)
        self.job.reactor = self.clock
        self.credentials = self.provider.parse_credentials(credentials_xml())

    def push(self) -> Deferred:
        return self.provider.push(self.job, self.credentials)

    def expected_blocks(self) -> dict[int, bytes]:
        data = self.path.read_bytes()
        blocks = {}
        for start in range(0, len(data), 512):
            block = data[start : start + 512].ljust(512, b"\0")
            if block != bytes(512):
                blocks[start // 512] = block
        return blocks


def outcome(deferred: Deferred, clock: Clock | None = None, step: float = 1.0, limit: int = 10000) -> Any:
    """The Deferred's result (or Failure), advancing ``clock`` until it fires."""
    found: list[Any] = []
    deferred.addBoth(found.append)
    for _ in range(limit):
        if found or clock is None:
            break
        clock.advance(step)
    assert found, "the push did not finish"
    return found[0]


def test_a_push_writes_the_data_blocks_and_registers_an_ami(tmp_path):
    setup = Setup(tmp_path, max_batch_bytes=512)
    result = outcome(setup.push(), setup.clock)
    assert isinstance(result, PushResult), result
    cloud = setup.cloud
    ((snapshot_id, snapshot),) = cloud.snapshots.items()
    assert result.identifier in cloud.images and result.details == {"snapshot_id": snapshot_id}
    assert snapshot["blocks"] == setup.expected_blocks()
    assert snapshot["size"] == 1
    assert snapshot["tags"] == [{"Key": "imagefactory:provider_image", "Value": setup.job.builder.id}]
    start = dict(cloud.calls)["StartSnapshot"]
    assert start["ClientToken"] == setup.job.builder.id
    registered = cloud.images[result.identifier]
    assert registered["Architecture"] == "arm64"
    assert registered["EnaSupport"] is True and registered["VirtualizationType"] == "hvm"
    assert registered["RootDeviceName"] == "/dev/sda1"
    assert registered["BlockDeviceMappings"] == [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 1, "DeleteOnTermination": True}}
    ]
    assert registered["Name"] == f"f14jeos-{setup.job.builder.id}"
    percents = setup.job.percents
    assert percents == sorted(percents) and percents[-1] == 100 and 90 in percents and 95 in percents
    assert len(percents) > 3, "progress moves with the blocks"
    assert any(snapshot_id in line for line in setup.job.logs)
    assert any(result.identifier in line for line in setup.job.logs)
    assert all(SECRET not in line for line in setup.job.logs)


def test_a_push_holds_a_bounded_amount_of_the_image_in_memory(tmp_path):
    """32 MiB of data, put in 4 KiB blocks by a cloud that keeps only checksums: the push's peak is a few MiB."""
    dense = {offset: os.urandom(1024 * 1024) for offset in range(0, 32 * 1024 * 1024, 1024 * 1024)}
    setup = Setup(tmp_path, image=dense, size=32 * 1024 * 1024)
    setup.cloud.block_size = 4096
    kept: list[str] = []

    def put_and_forget(**kwargs: Any) -> dict[str, Any]:
        kept.append(kwargs["Checksum"])
        return {}

    setup.cloud.put_snapshot_block = put_and_forget  # type: ignore[method-assign]
    setup.cloud.complete_snapshot = lambda **kwargs: {"Status": "completed"}  # type: ignore[method-assign]
    setup.cloud.snapshot_states = ["completed"]
    tracemalloc.start()
    try:
        result = outcome(setup.push(), setup.clock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, PushResult), result
    assert len(kept) == 32 * 1024 * 1024 // 4096
    print(f"peak {peak} bytes for 32 MiB of data")
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for 32 MiB of data"


def test_an_image_of_zeros_makes_an_empty_snapshot(tmp_path):
    setup = Setup(tmp_path, image={}, size=5 * 1024 * 1024)
    result = outcome(setup.push(), setup.clock)
    assert isinstance(result, PushResult)
    assert setup.cloud.count("PutSnapshotBlock") == 0
    assert dict(setup.cloud.calls)["CompleteSnapshot"]["ChangedBlocksCount"] == 0


def test_an_unknown_architecture_defaults_to_x86_64(tmp_path):
    setup = Setup(tmp_path, os_arch=None)
    result = outcome(setup.push(), setup.clock)
    assert setup.cloud.images[result.identifier]["Architecture"] == "x86_64"
    assert any("registering x86_64" in line for line in setup.job.logs)


def test_an_architecture_ec2_lacks_fails_before_any_call(tmp_path):
    setup = Setup(tmp_path, os_arch="s390x")
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and "'s390x'" in failure.value.message
    assert setup.cloud.calls == []


def test_a_target_that_is_not_raw_is_refused(tmp_path):
    setup = Setup(tmp_path, target="vsphere")
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and "built for 'vsphere'" in failure.value.message
    assert setup.cloud.calls == []


def test_throttled_puts_are_retried_with_backoff(tmp_path):
    setup = Setup(tmp_path, image={4096: b"\x01" * 512}, size=1024 * 1024)
    setup.cloud.errors["PutSnapshotBlock"] = [
        client_error("RequestThrottledException", "Rate exceeded"),
        client_error("InternalServerException", status=500),
    ]
    deferred = setup.push()
    found: list[Any] = []
    deferred.addBoth(found.append)
    assert not found, "waits for the backoff"
    setup.clock.advance(1.0)
    assert not found
    setup.clock.advance(2.0)
    assert found and isinstance(found[0], PushResult), found
    ((snapshot_id, snapshot),) = setup.cloud.snapshots.items()
    assert snapshot["blocks"] == setup.expected_blocks()
    assert any("RequestThrottledException: Rate exceeded; retrying in 1.0 s" in line for line in setup.job.logs)


def test_a_permanent_error_fails_the_push_with_the_service_message_and_deletes_the_snapshot(tmp_path):
    setup = Setup(tmp_path)
    setup.cloud.errors["RegisterImage"] = [
        client_error("InvalidParameterValue", "Value (x) for parameter name is invalid")
    ]
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and isinstance(failure.value, Ec2ServiceError)
    assert failure.value.message == (
        "moto-east: RegisterImage failed: InvalidParameterValue: Value (x) for parameter name is invalid"
    )
    assert setup.cloud.count("RegisterImage") == 1, "not retried"
    assert setup.cloud.snapshots == {} and setup.cloud.count("DeleteSnapshot") == 1
    assert any("deleted snapshot" in line for line in setup.job.logs)


def test_an_ami_that_fails_after_registration_is_deregistered_too(tmp_path):
    setup = Setup(tmp_path)
    setup.cloud.image_states = ["pending", "failed"]
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure)
    assert "is in state failed: the snapshot is unusable" in failure.value.message
    assert setup.cloud.images == {} and setup.cloud.snapshots == {}
    actions = [name for name, _ in setup.cloud.calls]
    assert actions.index("DeregisterImage") < actions.index("DeleteSnapshot")


def test_a_snapshot_in_error_fails_the_push(tmp_path):
    setup = Setup(tmp_path)
    setup.cloud.snapshot_states = ["pending", "pending", "error"]
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and "is in state error: broken disk" in failure.value.message
    assert setup.cloud.snapshots == {}


def test_waiting_for_the_snapshot_is_bounded(tmp_path):
    setup = Setup(tmp_path, snapshot_wait=100.0)
    setup.cloud.snapshot_states = ["pending"] * 1000
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and "is still pending after" in failure.value.message
    assert setup.clock.seconds() < 200


def test_a_refused_connection_fails_within_the_budget(tmp_path):
    setup = Setup(tmp_path, retry=RetryPolicy(max_attempts=10, budget=90.0, jitter=0))
    setup.cloud.errors["StartSnapshot"] = [EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")] * 100
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and isinstance(failure.value, Ec2ConnectionError)
    assert "moto-east: StartSnapshot failed: cannot reach the endpoint: Could not connect" in failure.value.message
    assert setup.clock.seconds() <= 90
    assert 3 <= setup.cloud.count("StartSnapshot") <= 10
    assert setup.cloud.snapshots == {} and setup.cloud.count("DeleteSnapshot") == 0


def test_bad_credentials_fail_at_once_with_the_service_message(tmp_path):
    setup = Setup(tmp_path)
    setup.cloud.errors["StartSnapshot"] = [
        client_error(
            "UnrecognizedClientException", "The security token included in the request is invalid.", status=403
        )
    ]
    failure = outcome(setup.push(), setup.clock)
    assert failure.value.message == (
        "moto-east: StartSnapshot failed: UnrecognizedClientException: The security "
        "token included in the request is invalid."
    )
    assert setup.clock.seconds() == 0


def test_a_failed_put_stops_the_push_and_deletes_the_snapshot(tmp_path):
    setup = Setup(tmp_path)
    setup.cloud.errors["PutSnapshotBlock"] = [client_error("ValidationException", "The block is bad")]
    failure = outcome(setup.push(), setup.clock)
    assert "PutSnapshotBlock failed: ValidationException: The block is bad" in failure.value.message
    assert setup.cloud.snapshots == {}
    assert setup.cloud.count("CompleteSnapshot") == 0


def test_a_snapshot_that_cannot_be_deleted_is_named_in_the_failure(tmp_path):
    setup = Setup(tmp_path, cleanup_retry=RetryPolicy(max_attempts=2, budget=5, jitter=0))
    setup.cloud.errors["RegisterImage"] = [client_error("InvalidParameterValue", "nope")]
    setup.cloud.errors["DeleteSnapshot"] = [client_error("InternalError", "down", status=500)] * 5
    failure = outcome(setup.push(), setup.clock)
    message = failure.value.message
    assert message.startswith("moto-east: RegisterImage failed: InvalidParameterValue: nope; snapshot snap-")
    assert "could not be deleted" in message and "delete it by hand" in message


def test_puts_are_several_in_flight_but_bounded(tmp_path):
    door = HeldDoor()
    many = {offset: os.urandom(512) for offset in range(0, 64 * 512, 512)}
    setup = Setup(tmp_path, door=door, image=many, size=64 * 512, puts_in_flight=4, max_batch_bytes=512)
    deferred = setup.push()
    found: list[Any] = []
    deferred.addBoth(found.append)
    most = 0
    for _ in range(1000):
        if found:
            break
        puts = sum(1 for fn, *_ in door.waiting if getattr(fn, "__name__", "") == "put_snapshot_block")
        most = max(most, puts)
        if not door.release(1):
            setup.clock.advance(1)
    assert isinstance(found[0], PushResult), found
    assert most == 4
    ((_, snapshot),) = setup.cloud.snapshots.items()
    assert snapshot["blocks"] == setup.expected_blocks()


def test_a_cancelled_push_stops_putting_and_deletes_its_snapshot(tmp_path):
    door = HeldDoor()
    many = {offset: os.urandom(512) for offset in range(0, 256 * 512, 512)}
    setup = Setup(tmp_path, door=door, image=many, size=256 * 512, puts_in_flight=4)
    deferred = setup.push()
    found: list[Any] = []
    deferred.addBoth(found.append)
    while setup.cloud.count("PutSnapshotBlock") < 20:
        assert door.release(1)
    deferred.cancel()
    assert not found, "the cleanup runs first"
    for _ in range(100):
        if found:
            break
        if not door.release():
            setup.clock.advance(1)
    assert isinstance(found[0], Failure) and found[0].check(CancelledError)
    puts = setup.cloud.count("PutSnapshotBlock")
    assert puts <= 20 + 4, "no new puts after the cancel, only those in flight"
    assert setup.cloud.snapshots == {} and setup.cloud.count("DeleteSnapshot") == 1
    assert setup.cloud.count("CompleteSnapshot") == 0


def test_a_push_cancelled_while_its_snapshot_starts_still_deletes_it(tmp_path):
    door = HeldDoor()
    setup = Setup(tmp_path, door=door)
    deferred = setup.push()
    found: list[Any] = []
    deferred.addBoth(found.append)
    while not any(getattr(fn, "__name__", "") == "start_snapshot" for fn, *_ in door.waiting):
        assert door.release(1)
    deferred.cancel()
    for _ in range(100):
        if found:
            break
        if not door.release():
            setup.clock.advance(1)
    assert found and found[0].check(CancelledError)
    assert setup.cloud.count("StartSnapshot") == 1 and setup.cloud.snapshots == {}


def test_a_duplicate_name_after_a_lost_answer_finds_the_ami(tmp_path):
    setup = Setup(tmp_path)
    cloud = setup.cloud
    original = cloud.register_image

    def register_then_lose_the_answer(**kwargs: Any) -> dict[str, Any]:
        if not cloud.images:
            original(**kwargs)
            raise ConnectionResetError(104, "Connection reset by peer")
        cloud.calls.append(("RegisterImage", kwargs))
        raise client_error("InvalidAMIName.Duplicate", f"AMI name {kwargs['Name']} is already in use")

    cloud.register_image = register_then_lose_the_answer  # type: ignore[method-assign]
    result = outcome(setup.push(), setup.clock)
    assert isinstance(result, PushResult) and result.identifier in cloud.images


def test_an_unserved_provider_fails(tmp_path):
    setup = Setup(tmp_path)
    setup.job.builder = Builder(**{**setup.job.builder.__dict__, "provider": "nowhere"})
    failure = outcome(setup.push(), setup.clock)
    assert isinstance(failure, Failure) and "does not serve provider 'nowhere'" in failure.value.message


def test_real_clients_are_made_with_short_timeouts_and_no_sdk_retries():
    from imgfac_twisted.providers.ec2_calls import make_clients
    from imgfac_twisted.providers.ec2_endpoints import Endpoint

    ec2, ebs = make_clients(
        Endpoint(name="m", region="us-east-1", endpoint_url="http://127.0.0.1:5000"), ACCESS, SECRET, 10
    )
    assert ec2.meta.endpoint_url == ebs.meta.endpoint_url == "http://127.0.0.1:5000"
    assert ec2.meta.region_name == "us-east-1"
    config = ec2.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    assert config.retries["total_max_attempts"] == 1
    aws_ec2, _ = make_clients(Endpoint(name="ec2-eu-west-1", region="eu-west-1"), ACCESS, SECRET, 10)
    assert aws_ec2.meta.endpoint_url == "https://ec2.eu-west-1.amazonaws.com"


def test_credentials_objects_never_show_secrets():
    credentials = Credentials(account_identifier="a", secrets={"secret_access_key": SECRET})
    assert SECRET not in repr(credentials)


def test_xml_and_html_error_bodies_are_made_readable():
    moto_auth = client_error(
        "403",
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        "<Code>InvalidClientTokenId</Code><Message>The security token included in the "
        "request is invalid.</Message><Type>Sender</Type></Error></Errors></ErrorResponse>",
        status=403,
    )
    problem = classify(moto_auth)
    assert (problem.code, problem.message, problem.transient) == (
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
        False,
    )
    crashed = classify(
        client_error(
            "500",
            "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>",
            status=500,
        )
    )
    assert (crashed.code, crashed.message, crashed.transient) == ("500", "500 Internal Server Error", True)
    bare = classify(
        ClientError(
            {"Error": {"Code": "InvalidSnapshot.NotFound"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            "DescribeSnapshots",
        )
    )
    assert (bare.code, bare.message) == ("InvalidSnapshot.NotFound", "(no message)")
    empty = classify(ClientError({"Error": {}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "X"))
    assert (empty.code, empty.message, empty.transient) == ("Unknown", "HTTP status 503", True)
    huge = classify(client_error("Big", "x" * 5000))
    assert len(huge.message) <= 1003
