"""Benchmark: an OpenStack push of a 1 GiB qcow2 through the daemon against the same upload done directly.

Starts a real Keystone and Glance 33 on 127.0.0.1 (tests/support/openstack_peer.py: installed once under
~/.cache/imgfac-test, databases on the PostgreSQL server at 127.0.0.1:5432) and a daemon whose
``provider_dir`` defines that cloud.  The daemon builds a Mock-OS ``openstack-kvm`` target image; its
qcow2 file is then replaced on disk by a 1 GiB qcow2 of random data (incompressible, so every byte goes
up), as bench_push.py does: the daemon pushes whatever file the target image names, so the measured
push is the product's push path end to end.

Each round pushes that image through the daemon (``POST .../provider_images``, polled every 0.1 s until
COMPLETED: Keystone authentication, image creation, the streamed upload with its SHA-512, waiting for
``active`` and the hash check) and, from this process, does the same with keystoneauth1 and
python-glanceclient directly (authenticate, create the image, upload the open file, wait for
``active``; no hash of its own).  Prints MB/s for both, their ratio, and the daemon's peak RSS (VmHWM,
reset before each push).  Every image is deleted from Glance after it was measured.

Usage: ``.venv/bin/python bench/bench_push_glance.py [--rounds 2] [--image-mib 1024] [--keep]``.
A benchmark, not a test: exits 0 whatever the figures, non-zero when something broke.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_push import CLIENT_KEY, CLIENT_SECRET, Api, proc_status, reset_peak, wait_port
from benchlib import BenchError, free_port, start, stop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.openstack_peer import PASSWORD, PROJECT, REGION, USER, OpenStackPeer

PROVIDER = "os-bench"
TEMPLATE = (
    "<template><name>benchglance</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>bench</description></template>"
)
CREDENTIALS = (
    "<provider_credentials><openstack_credentials>"
    f"<username>{USER}</username><password>{PASSWORD}</password><project_name>{PROJECT}</project_name>"
    "</openstack_credentials></provider_credentials>"
)
MIB = 1024 * 1024


def make_qcow2(path: str, mib: int) -> int:
    """A qcow2 holding ``mib`` MiB of random data at ``path`` (via a raw file); its size in bytes."""
    raw = path + ".raw"
    with open(raw, "wb") as stream:
        for _ in range(mib):
            stream.write(os.urandom(MIB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, path + ".partial"], check=True)
    os.remove(raw)
    os.replace(path + ".partial", path)
    return os.path.getsize(path)


def direct_push(peer: OpenStackPeer, path: str) -> tuple[float, str]:
    """Authenticate, create, upload and wait for ``active`` with the client libraries; (seconds, image id)."""
    from glanceclient import Client
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    begun = time.monotonic()
    auth = v3.Password(
        auth_url=peer.auth_url,
        username=USER,
        password=PASSWORD,
        project_name=PROJECT,
        user_domain_name="Default",
        project_domain_name="Default",
    )
    keystone = session.Session(auth=auth, timeout=60)
    glance = Client("2", session=keystone, interface="public", region_name=REGION)
    image = glance.images.create(name="bench-direct", disk_format="qcow2", container_format="bare")
    with open(path, "rb") as stream:
        glance.images.upload(image["id"], stream, image_size=os.path.getsize(path))
    while glance.images.get(image["id"])["status"] != "active":
        time.sleep(0.1)
    return time.monotonic() - begun, image["id"]


def daemon_push(api: Api, target_href: str) -> tuple[float, str]:
    begun = time.monotonic()
    answer = api.post(target_href + "/provider_images", {"provider": PROVIDER, "credentials": CREDENTIALS})
    if answer.status_code != 202:
        raise BenchError(f"push refused: {answer.status_code} {answer.text[:300]}")
    document = api.wait_final(answer.json()["href"], 1800)
    took = time.monotonic() - begun
    if document["status"] != "COMPLETED":
        raise BenchError(f"the push FAILED: {document.get('status_detail')}")
    return took, document["identifier_on_provider"]


def start_daemon(work: str, peer: OpenStackPeer) -> tuple[subprocess.Popen[bytes], Api]:
    providers = os.path.join(work, "providers")
    os.makedirs(providers)
    with open(os.path.join(providers, f"{PROVIDER}.json"), "w", encoding="utf-8") as stream:
        json.dump({"name": PROVIDER, "type": "openstack", "auth_url": peer.auth_url, "region": REGION}, stream)
    with open(os.path.join(work, "imagefactory.conf"), "w", encoding="utf-8") as stream:
        json.dump({"clients": {CLIENT_KEY: CLIENT_SECRET}, "provider_dir": providers, "mock_duration": 0.2}, stream)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    port = free_port()
    log = os.path.join(work, "daemon.log")
    argv = [twistd, "-n", "imagefactory", "--rest", "--config", "imagefactory.conf", "--state_dir", "state"]
    daemon = start([*argv, "--port", str(port), "--address", "127.0.0.1"], log, work)
    wait_port(port, daemon, log)
    return daemon, Api(f"https://127.0.0.1:{port}", os.path.join(work, "state", "tls", "imagefactory.pem"))


def built_target(api: Api, work: str) -> tuple[str, str]:
    """A COMPLETED Mock-OS openstack-kvm target image: its href and its file's path."""
    answer = api.post("/imagefactory/images", {"targets": "openstack-kvm", "template": TEMPLATE})
    if answer.status_code != 202:
        raise BenchError(f"build refused: {answer.status_code} {answer.text[:300]}")
    target = answer.json()["build"]["target_images"][0]
    built = api.wait_final(target["href"], 300)
    if built["status"] != "COMPLETED":
        raise BenchError(f"the build FAILED: {built.get('status_detail')}")
    db = sqlite3.connect(f"file:{os.path.join(work, 'state', 'imagefactory.sqlite')}?mode=ro", uri=True)
    try:
        ((artifact,),) = db.execute("SELECT artifact_path FROM builders WHERE id = ?", (target["id"],))
    finally:
        db.close()
    return target["href"], artifact


def run(args: argparse.Namespace, work: str) -> None:
    peer = OpenStackPeer(Path(work) / "openstack")
    daemon = None
    try:
        peer.workdir.mkdir()
        peer.start()
        daemon, api = start_daemon(work, peer)
        href, artifact = built_target(api, work)
        size = make_qcow2(artifact, args.image_mib)
        mb = size / 1e6
        print(f"bench: {artifact} replaced by a qcow2 of {size / MIB:.0f} MiB of random data", flush=True)
        rates: dict[str, list[float]] = {"daemon": [], "direct": []}
        peaks: list[int] = []
        for round_number in range(args.rounds):
            for which in ("daemon", "direct") if round_number % 2 == 0 else ("direct", "daemon"):
                extra = ""
                if which == "daemon":
                    rss = proc_status(daemon.pid, "VmRSS")
                    reset_peak(daemon.pid)
                    took, image_id = daemon_push(api, href)
                    peaks.append(proc_status(daemon.pid, "VmHWM"))
                    extra = f"RSS before {rss / MIB:.1f} MiB, peak {peaks[-1] / MIB:.1f} MiB"
                else:
                    took, image_id = direct_push(peer, artifact)
                uploaded = peer.image(image_id)
                if uploaded is None or uploaded["size"] != size:
                    raise BenchError(f"Glance image {image_id} is not the {size}-byte file: {uploaded}")
                peer.glance("DELETE", f"/v2/images/{image_id}")
                rates[which].append(mb / took)
                print(f"bench: {which:6s} {took:7.2f} s  {mb / took:7.1f} MB/s  {extra}", flush=True)
        daemon_rate, direct_rate = statistics.median(rates["daemon"]), statistics.median(rates["direct"])
        print()
        print(f"qcow2 of {size / MIB:.0f} MiB pushed to Glance 33 (file store) on loopback, Keystone password auth")
        print(f"daemon push (request to COMPLETED): {daemon_rate:.1f} MB/s (median of {len(rates['daemon'])})")
        print(f"glanceclient direct (same file):    {direct_rate:.1f} MB/s (median of {len(rates['direct'])})")
        print(f"ratio daemon/direct: {daemon_rate / direct_rate:.2f}")
        print(f"daemon peak RSS (VmHWM) during a push: {max(peaks) / MIB:.1f} MiB")
    finally:
        stop(daemon)
        peer.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (daemon, direct), alternating order")
    parser.add_argument("--image-mib", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-glance-")
    failed = False
    try:
        run(args, work)
    except BenchError as error:
        failed = True
        print(f"bench: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep or failed:
            print(f"bench: files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
