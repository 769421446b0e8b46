"""Mirrors that answer 403 for a file they do not have (S3- and CDN-backed ones), served for real on 127.0.0.1.

The plug-ins download with the real treq over a real socket from a
twisted.web server that answers 403 Forbidden, never 404, for a missing
path; the VM run is the fake virt layer.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from twisted.web.server import Site

from imgfac_twisted.os.debian import debian, ubuntu
from imgfac_twisted.os.fedora import fedora
from imgfac_twisted.os.testing import FakeJob, FakeVirt, TreeResource, gzip_newc
from imgfac_twisted.os.vm_install import NO_TREEINFO
from imgfac_twisted.template import parse_template
from imgfac_twisted.testing import InlineDoor

INITRD = gzip_newc({"init": b"#!/bin/sh\n"})
KERNEL = b"\x7fKERNEL" * 1000
DEBIAN_NETBOOT = "debian/dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/"
UBUNTU_NETBOOT = "ubuntu/dists/focal/main/installer-amd64/current/images/netboot/ubuntu-installer/amd64/"


class ForbiddingTree(TreeResource):
    """An install tree answering 403 for every path it does not hold, or lists in ``forbidden``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.forbidden: set[str] = set()

    def render_GET(self, request: Any) -> Any:
        path = request.path.decode("utf-8").lstrip("/")
        if path not in self.files or path in self.forbidden:
            self.requested.append(path)
            request.setResponseCode(403)
            return b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        return super().render_GET(request)


@pytest.fixture
def mirror():
    """A ForbiddingTree listening on 127.0.0.1; yields (tree, base URL)."""
    from twisted.internet import reactor  # installed by pytest-twisted

    tree = ForbiddingTree({})
    port = reactor.listenTCP(0, Site(tree), interface="127.0.0.1")
    yield tree, f"http://127.0.0.1:{port.getHost().port}/"
    pytest_twisted.blockon(port.stopListening())


def _plugin(tmp_path, factory) -> tuple[Any, FakeVirt]:
    from twisted.internet import reactor

    config = SimpleNamespace(
        state_dir=str(tmp_path / "state"),
        install_download_timeout=30.0,
        install_download_max_bytes=10**6,
        install_iso_dir=None,
        libvirt_domain_type="qemu",
        install_inactivity_timeout=30.0,
        install_timeout=600.0,
        install_memory_mib=1024,
    )
    virt = FakeVirt()
    environment = SimpleNamespace(config=config, reactor=reactor, disk_door=InlineDoor(), libvirt=object())
    return factory(environment, virt=virt), virt


def _job(tmp_path, name: str, version: str, url: str) -> FakeJob:
    from twisted.internet import reactor

    work = tmp_path / "state" / "builds" / "b-1"
    work.mkdir(parents=True, exist_ok=True)
    template = parse_template(
        f"<template><name>t</name><os><name>{name}</name><version>{version}</version><arch>x86_64</arch>"
        f"<install type='url'><url>{url}</url></install><rootpw>pw</rootpw></os>"
        "<disk><size>1M</size></disk></template>"
    )
    return FakeJob(
        template=template,
        build_id="b-1",
        image_path=str(work / "base.raw.partial"),
        work_dir=str(work),
        reactor=reactor,
    )


async def _until_vm_or_end(system: Any, virt: FakeVirt, job: FakeJob) -> Any:
    """Run install() until the VM would start (the boot media found) or it failed; the failure or None."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    running = system.install(job)
    outcome: list[Any] = []
    running.addErrback(outcome.append)
    for _ in range(500):
        if virt.calls or outcome:
            break
        await deferLater(reactor, 0.01, lambda: None)
    if virt.calls:
        virt.finish()
        return None
    assert outcome, "install() neither started the VM nor failed"
    return outcome[0]


@pytest_twisted.ensureDeferred
async def test_a_forbidden_treeinfo_means_the_standard_paths(tmp_path, mirror):
    """.treeinfo answered 403 is taken as absent (and remembered): the Debian netboot kernel is booted."""
    tree, url = mirror
    tree.files.update({DEBIAN_NETBOOT + "linux": KERNEL, DEBIAN_NETBOOT + "initrd.gz": INITRD})
    system, virt = _plugin(tmp_path, debian)
    job = _job(tmp_path, "Debian", "12", url + "debian/")
    assert await _until_vm_or_end(system, virt, job) is None
    assert open(virt.calls[-1]["spec"].kernel_path, "rb").read() == KERNEL
    assert tree.requested[0] == "debian/.treeinfo"
    assert "the install tree has no .treeinfo (HTTP 403): using the standard paths" in job.lines
    assert os.path.exists(system._downloader.cached_path(url + "debian/", NO_TREEINFO))


@pytest_twisted.ensureDeferred
async def test_a_forbidden_kernel_candidate_falls_back_to_the_next(tmp_path, mirror):
    """Ubuntu's legacy-images answered 403 is skipped like a 404: images/ is used."""
    tree, url = mirror
    tree.files.update({UBUNTU_NETBOOT + "linux": KERNEL, UBUNTU_NETBOOT + "initrd.gz": INITRD})
    system, virt = _plugin(tmp_path, ubuntu)
    assert await _until_vm_or_end(system, virt, _job(tmp_path, "Ubuntu", "20.04", url + "ubuntu/")) is None
    assert open(virt.calls[-1]["spec"].kernel_path, "rb").read() == KERNEL
    assert any("/legacy-images/" in path for path in tree.requested)


@pytest_twisted.ensureDeferred
async def test_a_forbidden_initrd_beside_its_kernel_fails_clearly(tmp_path, mirror):
    """The initrd of a kernel that exists must exist: a 403 for it fails the install naming URL and status."""
    tree, url = mirror
    tree.files.update({"f39/images/pxeboot/vmlinuz": KERNEL, "f39/images/pxeboot/initrd.img": INITRD})
    tree.forbidden.add("f39/images/pxeboot/initrd.img")
    system, virt = _plugin(tmp_path, fedora)
    failure = await _until_vm_or_end(system, virt, _job(tmp_path, "Fedora", "39", url + "f39/"))
    assert failure is not None and not virt.calls
    assert str(failure.value) == (
        f"Fedora 39 install failed: download of {url}f39/images/pxeboot/initrd.img failed: HTTP 403 Forbidden"
    )


@pytest_twisted.ensureDeferred
async def test_no_kernel_anywhere_names_each_answer(tmp_path, mirror):
    """Every kernel candidate answered 403: the reason names the tree and each path with its status."""
    _, url = mirror
    system, virt = _plugin(tmp_path, ubuntu)
    failure = await _until_vm_or_end(system, virt, _job(tmp_path, "Ubuntu", "20.04", url + "ubuntu/"))
    assert failure is not None and not virt.calls
    message = str(failure.value)
    assert message.startswith(f"Ubuntu 20.04 install failed: no installer kernel in the install tree {url}ubuntu/")
    assert message.count(": HTTP 403") == 2 and "legacy-images/netboot" in message
