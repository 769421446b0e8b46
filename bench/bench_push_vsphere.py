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
import json
import os
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from bench_push import CLIENT_KEY, CLIENT_SECRET, Api, proc_status, reset_peak, wait_port
from benchlib import BenchError, free_port, start, stop

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
MIB = 1024 * 1024


def make_vmdk(path: str, mib: int) -> int:
    """A streamOptimized vmdk holding ``mib`` MiB of random data at ``path``; its size in bytes."""
    raw = path + ".raw"
    with open(raw, "wb") as stream:
        for _ in range(mib):
            stream.write(os.urandom(MIB))
    convert = ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"]
    subprocess.run([*convert, raw, path + ".partial"], check=True)
    os.remove(raw)
    os.replace(path + ".partial", path)
    return os.path.getsize(path)


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


def start_daemon(work: str, peer: VcsimPeer) -> tuple[subprocess.Popen[bytes], Api]:
    providers = os.path.join(work, "providers")
    os.makedirs(providers)
    site: dict[str, Any] = {"name": PROVIDER, "type": "vsphere", **SITE, "ca_bundle": str(peer.ca)}
    site["url"] = f"https://127.0.0.1:{peer.vcsim_port}/sdk"
    with open(os.path.join(providers, f"{PROVIDER}.json"), "w", encoding="utf-8") as stream:
        json.dump(site, stream)
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
    """A COMPLETED Mock-OS vsphere target image: its href and its file's path."""
    answer = api.post("/imagefactory/images", {"targets": "vsphere", "template": TEMPLATE})
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
    (Path(work) / "vcsim").mkdir()
    peer = VcsimPeer(Path(work) / "vcsim")
    daemon = None
    try:
        peer.start()
        daemon, api = start_daemon(work, peer)
        href, artifact = built_target(api, work)
        size = make_vmdk(artifact, args.image_mib)
        mb = size / 1e6
        print(f"bench: {artifact} replaced by a vmdk of {size / MIB:.0f} MiB of random data", flush=True)
        rates: dict[str, list[float]] = {"daemon": [], "direct": []}
        peaks: list[int] = []
        for round_number in range(args.rounds):
            for which in ("daemon", "direct") if round_number % 2 == 0 else ("direct", "daemon"):
                extra = ""
                if which == "daemon":
                    rss = proc_status(daemon.pid, "VmRSS")
                    reset_peak(daemon.pid)
                    took, vm_id = daemon_push(api, href)
                    peaks.append(proc_status(daemon.pid, "VmHWM"))
                    extra = f"RSS before {rss / MIB:.1f} MiB, peak {peaks[-1] / MIB:.1f} MiB"
                else:
                    took, vm_id = direct_push(peer, artifact, args.image_mib, round_number)
                if not peer.vms().get(vm_id, {}).get("template"):
                    raise BenchError(f"VM {vm_id} is not a template in vcsim")
                peer.destroy(vm_id)
                rates[which].append(mb / took)
                print(f"bench: {which:6s} {took:7.2f} s  {mb / took:7.1f} MB/s  {extra}", flush=True)
        daemon_rate, direct_rate = statistics.median(rates["daemon"]), statistics.median(rates["direct"])
        print()
        print(f"vmdk of {size / MIB:.0f} MiB imported into vcsim on loopback (TLS), OVF import lease")
        print(f"daemon push (request to COMPLETED): {daemon_rate:.1f} MB/s (median of {len(rates['daemon'])})")
        print(f"pyVmomi + requests direct (same):   {direct_rate:.1f} MB/s (median of {len(rates['direct'])})")
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
    work = tempfile.mkdtemp(prefix="bench-vsphere-")
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
