"""The daemon and libvirt: it starts without a libvirtd, and at start removes the install domains a
killed daemon left behind (only its own: those whose disks lie in its state directory)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from imgfac_twisted.virt.install import DOMAIN_PREFIX
from support.daemon import DaemonPool, mock_config

URI = "qemu:///system"


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True)


def test_daemon_starts_and_serves_without_libvirt(daemon_factory: DaemonPool, tmp_path: Path) -> None:
    """With a libvirt URI that cannot be reached the daemon serves anyway and logs one warning naming it."""
    uri = f"qemu+unix:///system?socket={tmp_path}/no-libvirt-sock"
    daemon = daemon_factory(mock_config(libvirt_uri=uri))
    assert daemon.get_json("/imagefactory")["name"] == "imagefactory"
    deadline = time.monotonic() + 10
    while "cannot be reached" not in daemon.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    warnings = [line for line in daemon.log_text().splitlines() if "cannot be reached" in line]
    assert len(warnings) == 1 and uri in warnings[0]


@pytest.fixture
def libvirtd() -> None:
    if virsh("version").returncode != 0:
        pytest.skip(f"libvirtd cannot be reached on {URI}; scripts/libvirt-up.sh starts it")


def test_leftover_domain_of_this_state_dir_is_removed_at_start(
    libvirtd: None, daemon_factory: DaemonPool, tmp_path: Path
) -> None:
    """A defined imgfac-* domain whose disk is in the daemon's state_dir goes; one of another folder stays."""
    daemon = daemon_factory(mock_config(), start=False)
    suffix = uuid.uuid4().hex[:8]
    mine, other = f"{DOMAIN_PREFIX}leftover-{suffix}", f"{DOMAIN_PREFIX}other-{suffix}"
    (daemon.state_dir / "builds" / "b").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    try:
        for name, disk in (
            (mine, daemon.state_dir / "builds" / "b" / "base.raw"),
            (other, tmp_path / "elsewhere" / "base.raw"),
        ):
            disk.write_bytes(b"\0" * 65536)
            xml = tmp_path / f"{name}.xml"
            xml.write_text(
                f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                f"<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
                f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
            )
            assert virsh("define", str(xml)).returncode == 0
        daemon.start_ready()
        deadline = time.monotonic() + 15
        while virsh("domstate", mine).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert virsh("domstate", mine).returncode != 0, "the daemon's leftover domain is still defined"
        assert virsh("domstate", other).returncode == 0, "another folder's domain was removed"
        assert mine in daemon.log_text()
    finally:
        for name in (mine, other):
            virsh("destroy", name)
            virsh("undefine", name)
