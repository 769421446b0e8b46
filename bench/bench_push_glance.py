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
import os
import sys
import time
from pathlib import Path

import pushlib
from benchlib import BenchError, stop
from pushlib import MIB, built_target, daemon_push, measure, random_image, report_ratio, start_daemon

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


def make_qcow2(path: str, mib: int) -> int:
    """A qcow2 holding ``mib`` MiB of random data at ``path`` (via a raw file); its size in bytes."""
    return random_image(path, mib, ["-O", "qcow2"])


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


def landed(peer: OpenStackPeer, image_id: str, size: int) -> None:
    """Glance holds image ``image_id`` of ``size`` bytes; it is deleted."""
    uploaded = peer.image(image_id)
    if uploaded is None or uploaded["size"] != size:
        raise BenchError(f"Glance image {image_id} is not the {size}-byte file: {uploaded}")
    peer.glance("DELETE", f"/v2/images/{image_id}")


def run(args: argparse.Namespace, work: str) -> None:
    peer = OpenStackPeer(Path(work) / "openstack")
    daemon = None
    try:
        peer.workdir.mkdir()
        peer.start()
        provider = {"name": PROVIDER, "type": "openstack", "auth_url": peer.auth_url, "region": REGION}
        daemon, api = start_daemon(work, provider)
        href, artifact = built_target(api, work, "openstack-kvm", TEMPLATE)
        size = make_qcow2(artifact, args.image_mib)
        mb = size / 1e6
        print(f"bench: {artifact} replaced by a qcow2 of {size / MIB:.0f} MiB of random data", flush=True)
        rates, peaks = measure(
            args.rounds,
            daemon.pid,
            lambda: daemon_push(api, href, PROVIDER, CREDENTIALS),
            lambda number: direct_push(peer, artifact),
            lambda image_id: landed(peer, image_id, size),
            mb,
        )
        print()
        print(f"qcow2 of {size / MIB:.0f} MiB pushed to Glance 33 (file store) on loopback, Keystone password auth")
        report_ratio(rates["daemon"], rates["direct"], "glanceclient direct (same file)")
        print(f"daemon peak RSS (VmHWM) during a push: {max(peaks) / MIB:.1f} MiB")
    finally:
        stop(daemon)
        peer.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (daemon, direct), alternating order")
    parser.add_argument("--image-mib", type=int, default=1024)
    return pushlib.main(parser, argv, "bench-glance-", run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
