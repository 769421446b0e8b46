"""End to end: a TDL template with a URL install becomes an ec2 image through the running daemon,
a real libvirtd and QEMU (software emulation).

The "distribution" is tests/support/fake_installer.py: a real Debian kernel and a
busybox initramfs standing in for anaconda or d-i, served over HTTP on
127.0.0.1.  The daemon downloads kernel and initrd from that tree, appends
its generated kickstart/preseed to the initrd, boots the VM and waits for the
guest to power itself off.  The fake installer copies the kickstart it found
onto the disk, so the downloaded image shows what the factory gave it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from lxml import etree

from support import fake_installer
from support.daemon import Daemon, DaemonPool, mock_config

pytestmark = pytest.mark.slow

URI = "qemu:///system"
#: Software emulation boots the tiny guest in 10-30 s on this machine; leave room for a loaded one.
INSTALL_WAIT = 420.0
#: Small enough that the guest is quick, large enough for Debian's kernel.
MEMORY_MIB = 256


def template(os_name: str, version: str, url: str, name: str, install: str = "url") -> str:
    return (
        f"<template><name>{name}</name><description>end-to-end install</description>"
        f"<os><name>{os_name}</name><version>{version}</version><arch>x86_64</arch>"
        f"<install type='{install}'><{install}>{url}</{install}></install><rootpw>e2e-Secret-pw</rootpw></os>"
        f"<disk><size>64M</size></disk>"
        f"<packages><package name='openssh-server'/></packages></template>"
    )


def domains_of(target_image: dict[str, Any]) -> list[str]:
    """The libvirt domains (running or defined) of the target image's build: ``imgfac-<build id>``.

    Only this build's: other tests (or another run) may have VMs of their own.
    """
    listed = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True)
    return [name for name in listed.stdout.split() if name == f"imgfac-{target_image['build_id']}"]


@pytest.fixture(scope="module")
def libvirtd() -> None:
    if subprocess.run(["virsh", "-c", URI, "version"], capture_output=True).returncode != 0:
        pytest.skip(f"libvirtd cannot be reached on {URI}; scripts/libvirt-up.sh (run by the test command) starts it")


@pytest.fixture(scope="module")
def trees(libvirtd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two served trees: an installer that writes its result, and one that never writes."""
    writing, idle = tmp_path_factory.mktemp("tree"), tmp_path_factory.mktemp("idle-tree")
    fake_installer.lay_out_tree(writing, writes=True)
    fake_installer.lay_out_tree(idle, writes=False)
    fake_installer.lay_out_iso(writing / "fake-installer.iso", writes=True)
    with fake_installer.serve_tree(writing) as served, fake_installer.serve_tree(idle) as served_idle:
        yield {"writes": served.url, "idle": served_idle.url, "iso": served.url + "fake-installer.iso"}


def install_daemon(daemon_factory: DaemonPool, inactivity: float, **settings: Any) -> Daemon:
    # The fake installer's disk holds no OS to boot: the boot test is tested with a real Debian system
    # (test_real_debian.py) and on its own (test_virt_boot.py).
    return daemon_factory(
        mock_config(
            libvirt_uri=URI,
            libvirt_domain_type="qemu",
            install_memory_mib=MEMORY_MIB,
            install_inactivity_timeout=inactivity,
            install_timeout=INSTALL_WAIT,
            boot_test=False,
            **settings,
        )
    )


def build(daemon: Daemon, tdl: str) -> dict[str, Any]:
    answer = daemon.post("/imagefactory/images", data={"targets": "ec2", "template": tdl})
    assert answer.status_code == 202, answer.text
    return {**answer.json()["build"]["target_images"][0], "build_id": answer.json()["build"]["id"]}


def test_fedora_url_install_makes_an_ec2_image(
    trees: dict[str, str], daemon_factory: DaemonPool, tmp_path: Path
) -> None:
    """COMPLETED; the raw image holds the kickstart the installer found in its initrd; the log tells the story."""
    daemon = install_daemon(daemon_factory, inactivity=120)
    started = time.monotonic()
    target_image = build(daemon, template("Fedora", "38", trees["writes"], "e2e-fedora"))
    seen: set[str] = set()

    def ended(body: dict[str, Any]) -> bool:
        seen.add(body["status"])
        return body["status"] in ("COMPLETED", "FAILED")

    detail = daemon.poll(target_image["href"], ended, INSTALL_WAIT, interval=0.5)
    took = time.monotonic() - started
    log = daemon.get(f"/imagefactory/builders/{target_image['id']}/log").text
    assert detail["status"] == "COMPLETED", (detail, log[-3000:])
    assert "BUILDING" in seen
    image = daemon.get(target_image["href"] + "/raw_image").content
    assert len(image) == 64 * 1024 * 1024 == detail["image_size"]
    result = fake_installer.parse_result(image[:65536])
    assert result.name == "ks.cfg" and result.sha256 == fake_installer.sha256_hex(result.content)
    kickstart = result.content.decode()
    # The tree is on this host's 127.0.0.1: the installer inside the VM is sent to 10.0.2.2 (QEMU's user network).
    port = urlsplit(trees["writes"]).port
    assert f'url --url="http://10.0.2.2:{port}/"' in kickstart, kickstart
    assert f"inst.repo=http://10.0.2.2:{port}/" in log
    assert "openssh-server" in kickstart and "poweroff" in kickstart
    assert "e2e-Secret-pw" not in kickstart, "the root password is written hashed"
    assert "rootpw --iscrypted $6$" in kickstart
    for line in ("downloading", "ks.cfg", fake_installer.WROTE_MARKER, "COMPLETED"):
        assert line in log, (line, log[-3000:])
    assert log.index("fake-installer: started") < log.index(fake_installer.WROTE_MARKER) < log.rindex("COMPLETED")
    assert "e2e-Secret-pw" not in log
    assert domains_of(target_image) == [], "the install domain is destroyed and undefined"
    assert not (daemon.state_dir / "builds").exists() or not any((daemon.state_dir / "builds").iterdir())
    # The manifest the installer printed is the image's package list; its lines stay out of the log.
    name, version, arch = fake_installer.manifest_package().split()
    icicle = etree.fromstring(daemon.get(target_image["href"] + "/icicle").content)
    assert [dict(package.attrib) for package in icicle.iterfind("packages/package")] == [
        {"name": name, "version": version, "arch": arch}
    ]
    assert "IMGFAC-PKG" not in log and "package manifest read from the console: 1 packages" in log
    assert [stage["name"] for stage in detail["stages"]] == ["waiting", "downloading", "installing", "converting"]
    assert detail["stage"] is None and all(stage["ended_at"] for stage in detail["stages"])
    print(f"\nend-to-end Fedora URL install to a COMPLETED ec2 image: {took:.1f} s")


def test_an_installer_that_never_writes_fails_by_inactivity(trees: dict[str, str], daemon_factory: DaemonPool) -> None:
    """A Debian install whose guest never touches its disk ends FAILED saying so, with its console's last lines."""
    daemon = install_daemon(daemon_factory, inactivity=40)
    target_image = build(daemon, template("Debian", "12", trees["idle"], "e2e-idle"))
    detail = daemon.wait_final(target_image["href"], timeout=INSTALL_WAIT)
    assert detail["status"] == "FAILED", detail
    reason = detail["status_detail"]
    assert "no disk activity" in reason and "40" in reason, reason
    assert fake_installer.IDLE_MARKER in reason, "the reason ends with the console's last lines"
    log = daemon.get(f"/imagefactory/builders/{target_image['id']}/log").text
    assert "preseed.cfg" in log and fake_installer.IDLE_MARKER in log
    assert daemon.get(target_image["href"] + "/raw_image").status_code == 404
    assert domains_of(target_image) == []


def wait_for_log_line(daemon: Daemon, builder_id: str, line: str, timeout: float = INSTALL_WAIT) -> None:
    """Wait until the builder's log shows ``line`` (the guest is then running)."""
    deadline = time.monotonic() + timeout
    while line not in daemon.get(f"/imagefactory/builders/{builder_id}/log").text:
        assert time.monotonic() < deadline, f"{line!r} not in the log of {builder_id} within {timeout} s"
        time.sleep(0.5)


def test_cancel_stops_the_vm(trees: dict[str, str], daemon_factory: DaemonPool) -> None:
    """DELETE of the builder while the installer runs: FAILED "cancelled", the domain destroyed and undefined."""
    daemon = install_daemon(daemon_factory, inactivity=300)
    target_image = build(daemon, template("Fedora", "38", trees["idle"], "e2e-cancel"))
    wait_for_log_line(daemon, target_image["id"], fake_installer.IDLE_MARKER)
    assert len(domains_of(target_image)) == 1
    answer = daemon.delete(f"/imagefactory/builders/{target_image['id']}")
    assert answer.status_code == 202, answer.text
    detail = daemon.wait_final(target_image["href"], timeout=60)
    assert detail["status"] == "FAILED" and "cancelled" in detail["status_detail"], detail
    assert domains_of(target_image) == [], "the builder ends FAILED once its VM is gone"


def wait_until_no_domain(target_image: dict[str, Any], timeout: float) -> list[str]:
    """The build's domains, once there are none or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while domains_of(target_image) and time.monotonic() < deadline:
        time.sleep(0.2)
    return domains_of(target_image)


def test_a_killed_daemon_leaves_no_vm_or_disk(trees: dict[str, str], daemon_factory: DaemonPool) -> None:
    """kill -9 mid-install, then start again: the old domain and the build's disk are gone, the builder FAILED."""
    daemon = install_daemon(daemon_factory, inactivity=300)
    target_image = build(daemon, template("Fedora", "38", trees["idle"], "e2e-killed"))
    wait_for_log_line(daemon, target_image["id"], fake_installer.IDLE_MARKER)
    builds = daemon.state_dir / "builds"
    assert any(builds.iterdir()) and len(domains_of(target_image)) == 1
    daemon.kill()
    assert len(domains_of(target_image)) == 1, "killed with the daemon, the VM runs on"
    daemon.start_ready()
    assert wait_until_no_domain(target_image, 30) == []
    assert not any(builds.iterdir())
    detail = daemon.get_json(target_image["href"])
    assert detail["status"] == "FAILED" and "restart" in detail["status_detail"], detail


def test_builds_beyond_the_local_session_limit_wait_pending(trees: dict[str, str], daemon_factory: DaemonPool) -> None:
    """max_concurrent_local_sessions 1: a second build stays PENDING (no VM) until the first install ends."""
    daemon = install_daemon(daemon_factory, inactivity=300, max_concurrent_local_sessions=1)
    first = build(daemon, template("Fedora", "38", trees["idle"], "e2e-first"))
    wait_for_log_line(daemon, first["id"], fake_installer.IDLE_MARKER)
    second = build(daemon, template("Fedora", "38", trees["idle"], "e2e-second"))
    time.sleep(3)
    waiting = daemon.get_json(second["href"])
    assert waiting["status"] == "PENDING", waiting
    assert domains_of(second) == [] and len(domains_of(first)) == 1
    assert daemon.delete(f"/imagefactory/builders/{first['id']}").status_code == 202
    daemon.poll(second["href"], lambda body: body["status"] == "BUILDING", timeout=60)
    wait_for_log_line(daemon, second["id"], "fake-installer: started")
    assert len(domains_of(second)) == 1
    assert daemon.delete(f"/imagefactory/builders/{second['id']}").status_code == 202
    assert daemon.wait_final(second["href"], timeout=60)["status"] == "FAILED"
    assert wait_until_no_domain(first, 30) == [] and wait_until_no_domain(second, 30) == []


def test_iso_install_boots_from_the_iso_s_kernel_with_the_iso_attached(
    trees: dict[str, str], daemon_factory: DaemonPool
) -> None:
    """<install type='iso'>: kernel and initrd read out of the downloaded ISO, ks.cfg appended, COMPLETED."""
    daemon = install_daemon(daemon_factory, inactivity=120)
    target_image = build(daemon, template("Fedora", "38", trees["iso"], "e2e-iso", install="iso"))
    detail = daemon.wait_final(target_image["href"], timeout=INSTALL_WAIT)
    log = daemon.get(f"/imagefactory/builders/{target_image['id']}/log").text
    assert detail["status"] == "COMPLETED", (detail, log[-3000:])
    result = fake_installer.parse_result(daemon.get(target_image["href"] + "/raw_image").content[:65536])
    assert result.name == "ks.cfg" and "cdrom" in result.content.decode()
    assert "fake-installer.iso" in log and fake_installer.WROTE_MARKER in log
    assert domains_of(target_image) == []


def test_a_stopped_daemon_destroys_its_vm_and_fails_the_builder(
    trees: dict[str, str], daemon_factory: DaemonPool
) -> None:
    """SIGTERM mid-install: the daemon exits cleanly within the stop timeout, its VM destroyed; FAILED after restart."""
    daemon = install_daemon(daemon_factory, inactivity=300)
    target_image = build(daemon, template("Fedora", "38", trees["idle"], "e2e-stopped"))
    wait_for_log_line(daemon, target_image["id"], fake_installer.IDLE_MARKER)
    started = time.monotonic()
    assert daemon.stop() in (0, -signal.SIGTERM), daemon.diagnostics()
    took = time.monotonic() - started
    assert domains_of(target_image) == [], "the VM was destroyed before the daemon exited"
    daemon.start_ready()
    detail = daemon.get_json(target_image["href"])
    assert detail["status"] == "FAILED" and "stopped" in detail["status_detail"], detail
    print(f"\nSIGTERM to exit with a VM running: {took:.1f} s")
