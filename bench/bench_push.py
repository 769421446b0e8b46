"""Benchmark: an EC2 push through the daemon against boto3 putting the same blocks directly.

Pushes a 256 MiB raw image holding 16 MiB of data (64 runs of 256 KiB of
random bytes, one every 4 MiB; the rest holes) to a moto server on
127.0.0.1, through the daemon (``POST .../provider_images`` to a provider
defined in ``provider_dir``, polled until COMPLETED), and in the same run
puts the same blocks into a new snapshot with boto3 directly from this
process (same block size, same number of puts in flight, same botocore
settings).  Prints MB/s of data for both, their ratio, and the daemon's peak
memory (VmHWM from /proc/<pid>/status, reset before the pushes).

How the 256 MiB image comes about -- read this before quoting the figures:
the daemon only pushes target images it built, and a Mock-OS build makes a
disk of at least 1 GiB that is nearly empty (about 150 blocks of data).  So
the benchmark builds a Mock-OS ``ec2`` target image (``mock`` if the daemon
has no ec2 target), pushes that as it is (reported on its own line), and then
replaces the target image's file on disk with the 256 MiB image before the
measured pushes.  The daemon pushes whatever file the target image names, so
the measured push is the product's push path end to end; only the file was
swapped behind its back (its recorded size and SHA-256 no longer match).

moto answers a block size of 512 bytes (AWS: 524288), so 16 MiB of data is
32768 PutSnapshotBlock calls: this measures per-call overhead far more than
bandwidth.

The daemon's time is wall-clock from the push request to COMPLETED as seen
by polling every 0.1 s: it includes making the boto3 clients, reading the
image, start/complete snapshot, waiting for it, registering the AMI.  The
direct time covers start_snapshot, the puts and complete_snapshot, with the
blocks already in memory.  The daemon's own block phase (from its builder
log) is shown too.

Usage: ``.venv/bin/python bench/bench_push.py [--rounds 1] [--image-mib 256] [--data-mib 16] [--keep]``.
A benchmark, not a test: exits 0 whatever the figures, non-zero when something broke.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pushlib
from benchlib import BenchError, free_port, start, stop
from botocore.config import Config
from pushlib import (
    MIB,
    Api,
    alternating,
    artifact_path,
    proc_status,
    push_document,
    report_ratio,
    reset_peak,
    start_daemon,
    wait_port,
    with_peak,
)

PROVIDER = "moto-bench"
TEMPLATE = (
    "<template><name>benchpush</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>bench</description></template>"
)
CREDENTIALS = (
    "<provider_credentials><ec2_credentials><account_number>123456789012</account_number>"
    "<access_key>AKIABENCH</access_key><secret_access_key>bench-not-secret</secret_access_key>"
    "</ec2_credentials></provider_credentials>"
)
RUN_BYTES = 256 * 1024
IN_FLIGHT = 8


def make_image(path: str, image_bytes: int, data_bytes: int, seed: int = 6) -> dict[int, bytes]:
    """Write the sparse image; return its data as {512-byte block index: block}."""
    rng = random.Random(seed)
    runs = data_bytes // RUN_BYTES
    stride = image_bytes // runs
    blocks: dict[int, bytes] = {}
    partial = path + ".partial"
    with open(partial, "wb") as stream:
        stream.truncate(image_bytes)
        for run in range(runs):
            offset = run * stride
            data = rng.randbytes(RUN_BYTES)
            stream.seek(offset)
            stream.write(data)
            for first in range(0, RUN_BYTES, 512):
                blocks[(offset + first) // 512] = data[first : first + 512]
    os.replace(partial, path)
    return blocks


def clients(url: str) -> tuple[Any, Any]:
    config = Config(
        region_name="us-east-1",
        connect_timeout=10,
        read_timeout=60,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=IN_FLIGHT + 2,
    )
    session = boto3.session.Session(
        aws_access_key_id="AKIABENCH", aws_secret_access_key="bench-not-secret", region_name="us-east-1"
    )
    return session.client("ec2", endpoint_url=url, config=config), session.client(
        "ebs", endpoint_url=url, config=config
    )


def direct_push(url: str, blocks: dict[int, bytes], volume_gib: int) -> tuple[float, str]:
    """Put ``blocks`` into a new snapshot with boto3 from here, IN_FLIGHT at once; (seconds, snapshot id)."""
    _, ebs = clients(url)
    prepared = [
        (index, data, base64.b64encode(hashlib.sha256(data).digest()).decode())
        for index, data in sorted(blocks.items())
    ]
    begun = time.monotonic()
    snapshot = ebs.start_snapshot(VolumeSize=volume_gib, Description="bench direct")
    snapshot_id = snapshot["SnapshotId"]
    if snapshot["BlockSize"] != 512:
        raise BenchError(f"moto answered a block size of {snapshot['BlockSize']}, not 512")

    def put(item: tuple[int, bytes, str]) -> None:
        index, data, checksum = item
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=len(data),
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        for _ in pool.map(put, prepared):
            pass
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(prepared))
    return time.monotonic() - begun, snapshot_id


def count_blocks(url: str, snapshot_id: str) -> int:
    _, ebs = clients(url)
    count, kwargs = 0, {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        count += len(page.get("Blocks", []))
        if not page.get("NextToken"):
            return count
        kwargs["NextToken"] = page["NextToken"]


def daemon_push(api: Api, target_href: str, timeout: float) -> tuple[float, dict[str, Any], str]:
    """Push through the daemon; (seconds from request to COMPLETED, final document, builder log)."""
    begun = time.monotonic()
    document = push_document(api, target_href, PROVIDER, CREDENTIALS, timeout)
    took = time.monotonic() - begun
    log = api.text(f"/imagefactory/builders/{document['id']}/log")
    if document["status"] != "COMPLETED":
        raise BenchError(f"the push FAILED: {document.get('status_detail')}\n{log}")
    return took, document, log


def block_phase(log: str) -> str:
    found = re.search(r"wrote (\d+) blocks \((\d+) bytes, ([\d.]+) MB/s\)", log)
    return f"{found.group(3)} MB/s ({found.group(1)} blocks)" if found else "?"


def run(args: argparse.Namespace, work: str) -> None:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    for tool in (twistd, moto_server):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} not found: run with the project's venv Python (pip install 'moto[server]')")
    moto_port = free_port()
    moto_url = f"http://127.0.0.1:{moto_port}"
    moto_log = os.path.join(work, "moto.log")
    moto = daemon = None
    try:
        moto = start([moto_server, "-H", "127.0.0.1", "-p", str(moto_port)], moto_log, work)
        wait_port(moto_port, moto, moto_log)
        provider = {"name": PROVIDER, "type": "ec2", "region": "us-east-1", "endpoint_url": moto_url}
        daemon, api = start_daemon(work, provider)
        print(f"bench: moto (pid {moto.pid}) on {moto_url}; daemon (pid {daemon.pid}) on {api.base}", flush=True)

        target = "ec2"
        answer = api.post("/imagefactory/images", {"targets": target, "template": TEMPLATE})
        if answer.status_code == 400 and "unknown target" in answer.text:
            target = "mock"
            answer = api.post("/imagefactory/images", {"targets": target, "template": TEMPLATE})
        if answer.status_code != 202:
            raise BenchError(f"build refused: {answer.status_code} {answer.text[:300]}")
        target_image = answer.json()["build"]["target_images"][0]
        built = api.wait_final(target_image["href"], 300)
        if built["status"] != "COMPLETED":
            raise BenchError(f"the build FAILED: {built.get('status_detail')}")

        rss_idle = proc_status(daemon.pid, "VmRSS")
        peak_reset = reset_peak(daemon.pid)
        took, document, log = daemon_push(api, target_image["href"], 300)
        peak_small = proc_status(daemon.pid, "VmHWM")
        print(
            f"bench: the Mock-OS {target!r} image as built ({built['image_size'] / MIB:.0f} MiB): pushed in "
            f"{took:.2f} s, block phase {block_phase(log)}, AMI {document['identifier_on_provider']}",
            flush=True,
        )

        artifact = artifact_path(work, target_image["id"])
        blocks = make_image(artifact, args.image_mib * MIB, args.data_mib * MIB)
        data_mb = len(blocks) * 512 / 1e6
        print(
            f"bench: replaced {artifact} by a {args.image_mib} MiB image with {args.data_mib} MiB of data "
            f"({len(blocks)} blocks of 512 bytes)",
            flush=True,
        )

        rss_before = proc_status(daemon.pid, "VmRSS")
        peaks: list[int] = []
        rows: list[tuple[str, float, str]] = []
        for which in alternating(args.rounds):
            if which == "daemon":
                push = with_peak(daemon.pid, lambda: daemon_push(api, target_image["href"], 1800))
                (took, document, log), rss, push_peak = push
                peaks.append(push_peak)
                snapshot_id = document.get("snapshot_id") or re.search(r"started snapshot (\S+)", log).group(1)
                extra = (
                    f"block phase {block_phase(log)}; RSS before {rss / MIB:.1f} MiB, peak {push_peak / MIB:.1f} MiB"
                )
            else:
                took, snapshot_id = direct_push(moto_url, blocks, max(1, -(-args.image_mib // 1024)))
                extra = ""
            found = count_blocks(moto_url, snapshot_id)
            if found != len(blocks):
                raise BenchError(f"snapshot {snapshot_id} holds {found} blocks, not {len(blocks)}")
            rows.append((which, took, extra))
            print(
                f"bench: {which:6s} {took:7.2f} s  {data_mb / took:6.3f} MB/s  {len(blocks) / took:7.0f} puts/s  "
                f"{extra}",
                flush=True,
            )
        peak = max(peaks)

        daemon_rates = [data_mb / took for which, took, _ in rows if which == "daemon"]
        direct_rates = [data_mb / took for which, took, _ in rows if which == "direct"]
        print()
        print(
            f"image {args.image_mib} MiB, data {args.data_mib} MiB = {len(blocks)} blocks of 512 bytes "
            f"(moto's block size), {IN_FLIGHT} puts in flight, moto server on loopback"
        )
        report_ratio(daemon_rates, direct_rates, "boto3 direct (same blocks)", digits=3)
        print(
            f"daemon memory: RSS {rss_idle / MIB:.1f} MiB after the build; peak (VmHWM) during the push of the "
            f"{built['image_size'] / MIB:.0f} MiB Mock-OS image (few blocks) "
            f"{peak_small / MIB:.1f} MiB; RSS {rss_before / MIB:.1f} MiB before the measured pushes, highest peak "
            f"during one of them {peak / MIB:.1f} MiB"
            + ("" if peak_reset else " (VmHWM could not be reset: peaks since start)")
        )
    finally:
        stop(daemon)
        stop(moto)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (daemon, direct), alternating order")
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--data-mib", type=int, default=16)
    return pushlib.main(parser, argv, "bench-push-", run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
