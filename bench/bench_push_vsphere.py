"""Benchmark: a vSphere push of a 1 GiB vmdk through the daemon against the same import done directly.

Starts vcsim (tests/support/vcsim_peer.py: built once under ~/.cache/imgfac-test from Debian's govmomi
source) and a daemon whose ``provider_dir`` defines it (straight to vcsim, not through the tests'
hashing proxy, so both sides talk to the same server).  The daemon builds a Mock-OS ``vsphere`` target
image; its vmdk is then replaced on disk by a streamOptimized vmdk of random data (incompressible, so
every byte goes up), as bench_push_glance.py does: the daemon pushes whatever file the target image
names, so the measured push is the product's push path end to end.

Each round pushes that image through the daemon (``POST .../provider_images``, polled every 0.1 s
until COMPLETED: log in, CreateImportSpec, ImportVApp, the streamed upload with the lease kept alive,
HttpNfcLeaseComplete, MarkAsTemplate) and, from this process, does the same with pyVmomi and requests
directly (the usual sample code: the open file posted with ``requests``).  Prints MB/s for both,
their ratio, and the daemon's peak RSS (VmHWM, reset before each push).  Every VM is destroyed after
it was measured.  vcsim discards the disk, so the figures are the client side's cost.

Usage: ``.venv/bin/python bench/bench_push_vsphere.py [--rounds 2] [--image-mib 1024] [--keep]``.
A benchmark, not a test: exits 0 whatever the figures, non-zero when something broke.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import pushlib
import requests
from benchlib import BenchError, stop
from pushlib import MIB, built_target, daemon_push, measure, random_image, report_ratio, start_daemon

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgfac_twisted.targets.ovf import descriptor
from support.vcsim_peer import PASSWORD, USER, VcsimPeer

PROVIDER = "vc-bench"
SITE = {"datacenter": "DC0", "datastore": "LocalDS_0", "cluster": "DC0_C0", "folder": "vm"}
TEMPLATE = (
    "<template><name>benchvc</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>bench</description></template>"
)
CREDENTIALS = (
    "<provider_credentials><vsphere_credentials>"
    f"<username>{USER}</username><password>{PASSWORD}</password>"
    "</vsphere_credentials></provider_credentials>"
)


def make_vmdk(path: str, mib: int) -> int:
    """A streamOptimized vmdk holding ``mib`` MiB of random data at ``path``; its size in bytes."""
    return random_image(path, mib, ["-O", "vmdk", "-o", "subformat=streamOptimized"])


def direct_push(peer: VcsimPeer, path: str, mib: int, round_number: int) -> tuple[float, str]:
    """Log in, import, post the file with requests, complete, mark a template; (seconds, VM id)."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    begun = time.monotonic()
    context = ssl.create_default_context(cafile=str(peer.ca))
    service = SmartConnect(host="127.0.0.1", port=peer.vcsim_port, user=USER, pwd=PASSWORD, sslContext=context)
    try:
        content = service.RetrieveContent()
        cluster = content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0")
        folder = content.searchIndex.FindByInventoryPath("DC0/vm")
        datastore = next(d for d in content.searchIndex.FindByInventoryPath("DC0").datastore if d.name == "LocalDS_0")
        size = os.path.getsize(path)
        ovf = descriptor("direct", "Mock 1 x86_64", "disk1.vmdk", size, mib * MIB).decode()
        params = vim.OvfManager.CreateImportSpecParams(entityName=f"bench-direct-{round_number}")
        spec = content.ovfManager.CreateImportSpec(ovf, cluster.resourcePool, datastore, params)
        lease = cluster.resourcePool.ImportVApp(spec.importSpec, folder)
        while lease.state == vim.HttpNfcLease.State.initializing:
            time.sleep(0.1)
        url = lease.info.deviceUrl[0].url.replace("*", f"127.0.0.1:{peer.vcsim_port}")
        headers = {"Content-Type": "application/x-vnd.vmware-streamVmdk", "Content-Length": str(size)}
        with open(path, "rb") as stream:
            answer = requests.post(url, data=stream, headers=headers, verify=str(peer.ca), timeout=600)
        answer.raise_for_status()
        lease.HttpNfcLeaseProgress(100)
        lease.HttpNfcLeaseComplete()
        # The lease is gone once complete: the VM is found by its path.
        vm = content.searchIndex.FindByInventoryPath(f"DC0/vm/bench-direct-{round_number}")
        vm.MarkAsTemplate()
        return time.monotonic() - begun, str(vm._moId)
    finally:
        Disconnect(service)


def landed(peer: VcsimPeer, vm_id: str) -> None:
    """vcsim holds VM ``vm_id``, a template; it is destroyed."""
    if not peer.vms().get(vm_id, {}).get("template"):
        raise BenchError(f"VM {vm_id} is not a template in vcsim")
    peer.destroy(vm_id)


def run(args: argparse.Namespace, work: str) -> None:
    (Path(work) / "vcsim").mkdir()
    peer = VcsimPeer(Path(work) / "vcsim")
    daemon = None
    try:
        peer.start()
        site: dict[str, Any] = {"name": PROVIDER, "type": "vsphere", **SITE, "ca_bundle": str(peer.ca)}
        site["url"] = f"https://127.0.0.1:{peer.vcsim_port}/sdk"
        daemon, api = start_daemon(work, site)
        href, artifact = built_target(api, work, "vsphere", TEMPLATE)
        size = make_vmdk(artifact, args.image_mib)
        mb = size / 1e6
        print(f"bench: {artifact} replaced by a vmdk of {size / MIB:.0f} MiB of random data", flush=True)
        rates, peaks = measure(
            args.rounds,
            daemon.pid,
            lambda: daemon_push(api, href, PROVIDER, CREDENTIALS),
            lambda number: direct_push(peer, artifact, args.image_mib, number),
            lambda vm_id: landed(peer, vm_id),
            mb,
        )
        print()
        print(f"vmdk of {size / MIB:.0f} MiB imported into vcsim on loopback (TLS), OVF import lease")
        report_ratio(rates["daemon"], rates["direct"], "pyVmomi + requests direct (same)")
        print(f"daemon peak RSS (VmHWM) during a push: {max(peaks) / MIB:.1f} MiB")
    finally:
        stop(daemon)
        peer.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (daemon, direct), alternating order")
    parser.add_argument("--image-mib", type=int, default=1024)
    return pushlib.main(parser, argv, "bench-vsphere-", run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
