"""OS plug-ins against the real peers: a local HTTP tree, libvirtd and QEMU (software emulation).

The tree holds the fake installer of tests/support/fake_installer.py (a real Debian
kernel and a busybox initramfs) that writes the kickstart or preseed it finds
at the root of its initrd onto the disk and powers off.  The plug-in runs as
in the daemon: treq downloads, the disk door, one libvirt connection thread,
virt.install.run_install.
"""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted

from imgfac_twisted.doors import ThreadDoor
from imgfac_twisted.os.debian import debian
from imgfac_twisted.os.fedora import fedora
from imgfac_twisted.os.testing import FakeJob
from imgfac_twisted.os.vm_install import as_seen_from_guest
from imgfac_twisted.template import parse_template

pytestmark = pytest.mark.slow

libvirt = pytest.importorskip("libvirt")
fake_installer = pytest.importorskip("support.fake_installer")
pytest.importorskip("imgfac_twisted.virt.install")

URI = os.environ.get("IMGFAC_TEST_LIBVIRT_URI", "qemu:///system")


def _reactor() -> Any:
    from twisted.internet import reactor  # installed by pytest-twisted

    return reactor


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The fake installer laid out as Fedora and Debian trees, served on 127.0.0.1."""
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as error:
        pytest.skip(f"no libvirtd at {URI}: {error}")
    root = tmp_path_factory.mktemp("tree")
    fake_installer.lay_out_tree(root)
    with fake_installer.serve_tree(root) as server:
        yield server.url


def _tdl(name: str, version: str, url: str) -> str:
    return (
        f"<template><name>vm-{name}</name><os><name>{name}</name><version>{version}</version>"
        f"<arch>x86_64</arch><install type='url'><url>{url}</url></install><rootpw>pw</rootpw></os>"
        "<disk><size>64M</size></disk><packages><package name='tmux'/></packages></template>"
    )


async def _install(tmp_path, factory, template_xml: str) -> tuple[FakeJob, bytes]:
    from imgfac_twisted.virt.connection import LibvirtConnection

    reactor = _reactor()
    config = SimpleNamespace(
        state_dir=str(tmp_path / "state"),
        install_download_timeout=60.0,
        install_download_max_bytes=200 * 1024**2,
        install_iso_dir=None,
        libvirt_domain_type="qemu",
        install_inactivity_timeout=60.0,
        install_timeout=240.0,
        install_memory_mib=256,
    )
    door, connection = ThreadDoor(reactor, "disk", threads=1), LibvirtConnection(reactor, URI)
    door.startService()
    connection.startService()
    work = tmp_path / "state" / "builds" / f"os-vm-{os.getpid()}"
    work.mkdir(parents=True)
    job = FakeJob(
        template=parse_template(template_xml),
        build_id=work.name,
        image_path=str(work / "base.raw.partial"),
        work_dir=str(work),
        reactor=reactor,
    )
    system = factory(SimpleNamespace(config=config, reactor=reactor, disk_door=door, libvirt=connection))
    try:
        await system.install(job)
    finally:
        await connection.stopService()
        door.stopService()
    with open(job.image_path, "rb") as disk:
        return job, disk.read(1024 * 1024)


@pytest_twisted.ensureDeferred
async def test_fedora_kickstart_reaches_the_installer(tree, tmp_path):
    """The installer boots from the tree, finds /ks.cfg at the root of its initrd, and powers off."""
    job, disk = await _install(tmp_path, fedora, _tdl("Fedora", "39", tree))
    result = fake_installer.parse_result(disk)
    assert result.name == "ks.cfg"
    assert result.sha256 == hashlib.sha256(result.content).hexdigest()
    # The tree is on this host's loopback: the guest is sent to 10.0.2.2, QEMU's address for this host.
    assert f'url --url="{as_seen_from_guest(tree)}"'.encode() in result.content and b"\ntmux\n" in result.content
    assert "10.0.2.2" in as_seen_from_guest(tree)
    assert job.progress_seen[-1] == 100
    log = "\n".join(job.lines)
    assert "appended ks.cfg to the initrd" in log and fake_installer.WROTE_MARKER in log
    assert os.path.getsize(job.image_path) == 64 * 1024**2


@pytest_twisted.ensureDeferred
async def test_debian_preseed_reaches_the_installer(tree, tmp_path):
    """The same with Debian's netboot paths and /preseed.cfg."""
    job, disk = await _install(tmp_path, debian, _tdl("Debian", "12", tree))
    result = fake_installer.parse_result(disk)
    assert result.name == "preseed.cfg"
    assert b"d-i mirror/suite string bookworm" in result.content
