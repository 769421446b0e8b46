"""EC2 pushes through the real daemon to a moto server (the AWS wire protocol on loopback).

The tests start ``moto_server`` on 127.0.0.1 (one plain, one that checks
credentials), a small fault-injecting HTTP proxy in front of the plain one,
and one daemon whose ``provider_dir`` defines a provider for each.  They
build a Mock-OS ``ec2`` target image (a ``mock`` one if this daemon has no
``ec2`` target), push it, and check with boto3 what landed in moto: the AMI,
and the snapshot's blocks read back with the EBS direct API against the
downloaded image.  Failures (refused endpoint, rejected credentials, a failing
call, a cancel) must end FAILED with a reason and leave no snapshot behind;
no secret may show anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from support import pushes
from support.daemon import Daemon, DaemonPool, free_port, mock_config
from support.moto_peer import ACCESS_KEY, ACCOUNT, EC2_TEMPLATE, SECRET, MotoServer, credentials
from support.proxying import relay, serve
from support.pushes import builder_log, everything_said, refused_at_start, write_providers

TAG = "imagefactory:provider_image"
BUILD_TIMEOUT = 240.0
PUSH_TIMEOUT = 120.0
#: The issue's bound for an endpoint that refuses connections.
REFUSED_BOUND = 120.0


@dataclass
class Rule:
    """A fault: requests that ``match`` get ``status``/``body`` (or are delayed), ``times`` times."""

    match: Callable[[str, str, bytes], bool]
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] | None = None
    delay: float = 0.0
    times: int | None = None
    hits: int = 0


class FaultProxy:
    """An HTTP proxy in front of moto that can fail or slow down chosen calls."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy.rule_for(self.command, self.path, body)
                if rule is not None and rule.delay:
                    time.sleep(rule.delay)
                if rule is not None and rule.status:
                    self.send_response(rule.status)
                    for name, value in (rule.headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(rule.body)))
                    self.end_headers()
                    self.wfile.write(rule.body)
                    return
                relay(self, http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60), body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        self.server = serve(Handler, "fault-proxy")
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def rule_for(self, method: str, path: str, body: bytes) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if (rule.times is None or rule.hits < rule.times) and rule.match(method, path, body):
                    rule.hits += 1
                    return rule
        return None

    def set_rules(self, *rules: Rule) -> None:
        with self.lock:
            self.rules = list(rules)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def is_action(action: str) -> Callable[[str, str, bytes], bool]:
    """An EC2 query-protocol call of ``action``."""
    return lambda method, path, body: f"Action={action}&".encode() in body + b"&"


def is_block_put(method: str, path: str, body: bytes) -> bool:
    return method == "PUT" and "/blocks/" in path


def ec2_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
    ).encode()


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server that checks credentials (unknown access keys are refused, as AWS does)."""
    server = MotoServer(tmp_path_factory.mktemp("moto-auth"), "moto-auth", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    instance = FaultProxy(moto.port)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@pytest.fixture(scope="module")
def ec2_daemon(
    module_daemon_factory: DaemonPool,
    moto: MotoServer,
    moto_auth: MotoServer,
    proxy: FaultProxy,
    closed_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Daemon:
    folder = tmp_path_factory.mktemp("providers")
    definitions = {
        "moto-east": moto.url,
        "moto-auth": moto_auth.url,
        "moto-faulty": proxy.url,
        "moto-closed": f"http://127.0.0.1:{closed_port}",
        "moto-nowhere": "http://no-such-host.invalid:5000",
    }
    write_providers(
        folder, "ec2", {name: {"region": "us-east-1", "endpoint_url": url} for name, url in definitions.items()}
    )
    return module_daemon_factory.make(mock_config(provider_dir=str(folder)), name="ec2")


@pytest.fixture(scope="module")
def target_image(ec2_daemon: Daemon) -> dict[str, Any]:
    """A COMPLETED target image to push: Mock-OS ``ec2`` (or ``mock`` where the daemon has no ec2 target)."""
    answer = ec2_daemon.post("/imagefactory/images", data={"targets": "ec2", "template": EC2_TEMPLATE})
    target = "ec2"
    if answer.status_code == 400 and "unknown target" in answer.text:
        # The ec2 target is not there yet: any COMPLETED raw image will do for a push.
        target = "mock"
        answer = ec2_daemon.post("/imagefactory/images", data={"targets": "mock", "template": EC2_TEMPLATE})
    assert answer.status_code == 202, answer.text
    href = answer.json()["build"]["target_images"][0]["href"]
    detail = ec2_daemon.wait_final(href, timeout=BUILD_TIMEOUT)
    assert detail["status"] == "COMPLETED", detail
    blocks, size = nonzero_blocks(ec2_daemon, href, 512)
    return {"href": href, "id": detail["id"], "target": target, "detail": detail, "blocks": blocks, "size": size}


def nonzero_blocks(daemon: Daemon, href: str, block_size: int) -> tuple[dict[int, bytes], int]:
    """The downloaded raw image's blocks that hold data (the last one padded), and its size."""
    blocks: dict[int, bytes] = {}
    size = 0
    pending = b""
    with daemon.get(href + "/raw_image", stream=True, timeout=120) as answer:
        assert answer.status_code == 200, answer.text[:300]
        for chunk in answer.iter_content(1024 * 1024):
            data = pending + chunk
            whole = len(data) - len(data) % block_size
            for start in range(0, whole, block_size):
                block = data[start : start + block_size]
                if block.count(0) != block_size:
                    blocks[(size + start) // block_size] = block
            size += whole
            pending = data[whole:]
    if pending:
        block = pending.ljust(block_size, b"\0")
        if block.count(0) != block_size:
            blocks[size // block_size] = block
        size += len(pending)
    return blocks, size


def push(daemon: Daemon, target: dict[str, Any], provider: str, creds: str | None = None) -> dict[str, Any]:
    return pushes.push(daemon, target, provider, creds or credentials())


def snapshots_of(moto: MotoServer, provider_image_id: str) -> list[dict[str, Any]]:
    ec2, _ = moto.clients()
    return ec2.describe_snapshots(Filters=[{"Name": f"tag:{TAG}", "Values": [provider_image_id]}])["Snapshots"]


def snapshot_blocks(moto: MotoServer, snapshot_id: str) -> tuple[dict[int, bytes], int]:
    """Every block of the snapshot, read back with the EBS direct API, and the block size."""
    _, ebs = moto.clients()
    listed: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"SnapshotId": snapshot_id}
    block_size = 0
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        block_size = page["BlockSize"]
        listed.extend(page.get("Blocks", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    blocks = {}
    for entry in listed:
        answer = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=entry["BlockIndex"], BlockToken=entry["BlockToken"]
        )
        data = answer["BlockData"].read()
        assert answer["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        blocks[entry["BlockIndex"]] = data
    return blocks, block_size


# -- tests ---------------------------------------------------------------------


def test_a_push_makes_an_ami_whose_snapshot_holds_the_image(
    ec2_daemon: Daemon, moto: MotoServer, target_image: dict[str, Any]
) -> None:
    started = push(ec2_daemon, target_image, "moto-east")
    done = ec2_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    assert done["status"] == "COMPLETED", done
    assert done["provider"] == "moto-east" and done["operation"] == "push"
    assert done["provider_account_identifier"] == ACCOUNT
    assert done["completed"] == 100
    ami = done["identifier_on_provider"]
    assert ami.startswith("ami-")
    ec2, _ = moto.clients()
    images = ec2.describe_images(ImageIds=[ami])["Images"]
    assert [image["ImageId"] for image in images] == [ami]
    assert images[0]["Name"] == f"ec2push-{started['id']}"
    ((snapshot,),) = [snapshots_of(moto, started["id"])]
    assert done["snapshot_id"] == snapshot["SnapshotId"], "the snapshot id is shown in the details"
    assert snapshot["State"] == "completed" and snapshot["VolumeSize"] == 1
    blocks, block_size = snapshot_blocks(moto, snapshot["SnapshotId"])
    assert block_size == 512
    assert blocks == target_image["blocks"], "the snapshot holds exactly the image's data blocks"
    assert len(blocks) >= 1
    log = builder_log(ec2_daemon, started["id"])
    assert snapshot["SnapshotId"] in log and ami in log
    assert f"wrote {len(blocks)} blocks" in log
    print(
        f"pushed a {target_image['target']!r} target image of {target_image['size']} bytes: "
        f"{len(blocks)} data blocks of 512 bytes"
    )


def test_throttled_puts_are_retried_and_the_push_completes(
    ec2_daemon: Daemon, moto: MotoServer, proxy: FaultProxy, target_image: dict[str, Any]
) -> None:
    throttle = Rule(
        is_block_put,
        status=400,
        times=3,
        headers={"x-amzn-ErrorType": "RequestThrottledException", "Content-Type": "application/json"},
        body=json.dumps({"Message": "Rate exceeded", "Reason": "ACCOUNT_THROTTLED"}).encode(),
    )
    proxy.set_rules(throttle)
    try:
        started = push(ec2_daemon, target_image, "moto-faulty")
        done = ec2_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    finally:
        proxy.set_rules()
    assert done["status"] == "COMPLETED", done
    assert throttle.hits == 3
    assert "RequestThrottledException: Rate exceeded; retrying" in builder_log(ec2_daemon, started["id"])
    (snapshot,) = snapshots_of(moto, started["id"])
    assert snapshot_blocks(moto, snapshot["SnapshotId"])[0] == target_image["blocks"]


def test_a_failing_call_fails_the_push_with_its_message_and_leaves_no_snapshot(
    ec2_daemon: Daemon, moto: MotoServer, proxy: FaultProxy, target_image: dict[str, Any]
) -> None:
    proxy.set_rules(
        Rule(
            is_action("RegisterImage"),
            status=400,
            body=ec2_error("InvalidBlockDeviceMapping", "Injected: the root device is wrong"),
        )
    )
    try:
        started = push(ec2_daemon, target_image, "moto-faulty")
        done = ec2_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    finally:
        proxy.set_rules()
    assert done["status"] == "FAILED", done
    assert done["status_detail"] == (
        "moto-faulty: RegisterImage failed: InvalidBlockDeviceMapping: Injected: the root device is wrong"
    )
    assert snapshots_of(moto, started["id"]) == [], "the failed push deleted its snapshot"
    assert "deleted snapshot snap-" in builder_log(ec2_daemon, started["id"])


def test_rejected_credentials_fail_the_push_with_the_service_message(
    ec2_daemon: Daemon, moto_auth: MotoServer, target_image: dict[str, Any]
) -> None:
    started = push(ec2_daemon, target_image, "moto-auth", credentials(account=None))
    done = ec2_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    assert done["status"] == "FAILED", done
    assert done["provider_account_identifier"] == ACCESS_KEY, "without an account number, the access key id"
    assert done["status_detail"] == (
        "moto-auth: StartSnapshot failed: InvalidClientTokenId: The security token included in the request is invalid."
    )


def test_a_refused_or_unresolvable_endpoint_fails_the_push_within_two_minutes(
    ec2_daemon: Daemon, target_image: dict[str, Any]
) -> None:
    begun = time.monotonic()
    refused = push(ec2_daemon, target_image, "moto-closed")
    unresolvable = push(ec2_daemon, target_image, "moto-nowhere")
    for started, provider in ((refused, "moto-closed"), (unresolvable, "moto-nowhere")):
        done = ec2_daemon.wait_final(started["href"], timeout=REFUSED_BOUND + 10)
        took = time.monotonic() - begun
        assert done["status"] == "FAILED", done
        assert took < REFUSED_BOUND, took
        assert done["status_detail"].startswith(
            f"{provider}: StartSnapshot failed: cannot reach the endpoint: Could not connect to the endpoint URL"
        ), done["status_detail"]
        print(f"{provider}: FAILED after {took:.1f} s: {done['status_detail']}")


def test_a_cancelled_push_ends_failed_and_leaves_no_snapshot(
    ec2_daemon: Daemon, moto: MotoServer, proxy: FaultProxy, target_image: dict[str, Any]
) -> None:
    slow = Rule(is_block_put, delay=1.5)
    proxy.set_rules(slow)
    try:
        started = push(ec2_daemon, target_image, "moto-faulty")
        ec2_daemon.poll(
            f"/imagefactory/builders/{started['id']}",
            lambda doc: slow.hits > 0 or doc["status"] in ("COMPLETED", "FAILED"),
            timeout=PUSH_TIMEOUT,
        )
        cancel = ec2_daemon.delete(f"/imagefactory/builders/{started['id']}")
        assert 200 <= cancel.status_code < 300, cancel.text
        done = ec2_daemon.wait_final(started["href"], timeout=PUSH_TIMEOUT)
    finally:
        proxy.set_rules()
    assert done["status"] == "FAILED" and done["status_detail"] == "cancelled by a client", done
    deadline = time.monotonic() + 30
    while snapshots_of(moto, started["id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert snapshots_of(moto, started["id"]) == [], "the cancelled push deleted its snapshot"
    assert "deleted snapshot snap-" in builder_log(ec2_daemon, started["id"])


def test_an_unknown_provider_and_unknown_region_are_400(ec2_daemon: Daemon, target_image: dict[str, Any]) -> None:
    for provider in ("ec2-moon-1", "moto-west"):
        answer = ec2_daemon.post(
            target_image["href"] + "/provider_images", data={"provider": provider, "credentials": credentials()}
        )
        assert answer.status_code == 400 and provider in answer.json()["message"], answer.text
    answer = ec2_daemon.post(
        target_image["href"] + "/provider_images",
        data={"provider": "ec2-us-east-1", "credentials": credentials(secret="")},
    )
    assert answer.status_code == 400 and "secret_access_key" in answer.json()["message"]


def test_a_bad_provider_definition_stops_the_daemon_at_start(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    folder = tmp_path / "providers"
    folder.mkdir()
    (folder / "broken.json").write_text('{"name": "x", "type": "ec2", "region": "us-east-1"')
    said = refused_at_start(daemon_factory, folder)
    assert f"provider definition {folder / 'broken.json'}: is not valid JSON" in said, said[-2000:]


def test_no_secret_key_anywhere(ec2_daemon: Daemon) -> None:
    """Last: the daemon's log and output, its store, its state files and its answers hold no secret key."""
    assert ec2_daemon.sqlite_path.exists()
    assert SECRET not in everything_said(ec2_daemon, conductor=False)
