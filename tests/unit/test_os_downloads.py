"""Installer downloads (streamed, capped, timed, cached per tree) and finding boot files in trees."""

import os

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from imgfac_twisted.errors import ImageFactoryError
from imgfac_twisted.os.downloads import Downloader, DownloadFailed, tree_key
from imgfac_twisted.os.testing import TreeResource
from imgfac_twisted.os.trees import (
    BootFiles,
    debian_codename,
    debian_iso_paths,
    debian_tree_paths,
    from_treeinfo,
)
from imgfac_twisted.template import parse_template

TREE = "http://mirror.test/fedora/39/"
KERNEL = b"K" * 5000


def settle(stub, deferred):
    """Let the in-memory HTTP exchange run until ``deferred`` has fired; its result."""
    for _ in range(50):
        stub.flush()
        if deferred.called:
            break
    results = []
    deferred.addBoth(results.append)
    assert results, "the download never finished"
    return results[0]


@pytest.fixture
def tree():
    return TreeResource({"fedora/39/images/pxeboot/vmlinuz": KERNEL, "fedora/39/big": b"x" * 2000})


def downloader(tmp_path, resource, clock=None, max_bytes=10_000, timeout=60.0):
    stub = StubTreq(resource)
    return stub, Downloader(clock or Clock(), str(tmp_path / "cache"), timeout, max_bytes, http_client=stub)


def test_tree_file_is_downloaded_once_and_cached(tmp_path, tree):
    """The first call downloads with progress; the second downloads nothing; no .partial remains."""
    stub, fetcher = downloader(tmp_path, tree)
    progress, log = [], []
    path = settle(
        stub,
        ensureDeferred(
            fetcher.from_tree(
                TREE, "images/pxeboot/vmlinuz", lambda got, total: progress.append((got, total)), log.append
            )
        ),
    )
    assert open(path, "rb").read() == KERNEL
    assert path.startswith(str(tmp_path / "cache" / tree_key(TREE)))
    assert progress[-1] == (5000, 5000)
    assert any("downloading http://mirror.test/fedora/39/images/pxeboot/vmlinuz" in line for line in log)
    again = settle(stub, ensureDeferred(fetcher.from_tree(TREE, "images/pxeboot/vmlinuz")))
    assert again == path
    assert tree.requested == ["fedora/39/images/pxeboot/vmlinuz"]
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".partial")]


def test_missing_file_names_url_and_status(tmp_path, tree):
    """A 404 fails with DownloadFailed naming the URL and the status, and leaves no file."""
    stub, fetcher = downloader(tmp_path, tree)
    failure = settle(stub, ensureDeferred(fetcher.from_tree(TREE, "images/nothing")))
    assert failure.check(DownloadFailed) and failure.value.code == 404
    assert str(failure.value) == "download of http://mirror.test/fedora/39/images/nothing failed: HTTP 404 Not Found"
    assert not os.path.exists(fetcher.cached_path(TREE, "images/nothing"))


@pytest.mark.parametrize("sized", [True, False])
def test_too_big_is_refused(tmp_path, tree, sized):
    """A file over the cap fails naming the URL and the limit, announced or found while streaming."""
    if not sized:
        tree.unsized.add("fedora/39/big")
    stub, fetcher = downloader(tmp_path, tree, max_bytes=1000)
    failure = settle(stub, ensureDeferred(fetcher.from_tree(TREE, "big")))
    assert failure.check(DownloadFailed)
    assert str(failure.value) == "http://mirror.test/fedora/39/big is larger than the limit of 1000 bytes"
    folder = fetcher.tree_dir(TREE)
    assert not os.path.exists(folder) or os.listdir(folder) == []


def test_timeout_names_the_url_and_leaves_no_partial(tmp_path, tree):
    """A download still running at the time limit fails saying so; nothing half-written stays."""
    tree.stalled.add("fedora/39/big")
    clock = Clock()
    stub, fetcher = downloader(tmp_path, tree, clock=clock, timeout=30)
    running = ensureDeferred(fetcher.from_tree(TREE, "big"))
    stub.flush()
    assert not running.called
    clock.advance(30)
    failure = settle(stub, running)
    assert failure.check(DownloadFailed)
    assert str(failure.value) == "download of http://mirror.test/fedora/39/big did not finish within 30 s"
    assert os.listdir(fetcher.tree_dir(TREE)) == []


def test_treeinfo_names_the_boot_files():
    """The section images-<arch> gives kernel and initrd; another arch gives None."""
    text = "[general]\nfamily = Fedora\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n"
    assert from_treeinfo(text, "x86_64") == BootFiles("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")
    assert from_treeinfo(text, "aarch64") is None


def test_treeinfo_cannot_point_outside_the_tree():
    """A .treeinfo path with .. is refused."""
    with pytest.raises(ImageFactoryError):
        from_treeinfo("[images-x86_64]\nkernel = ../../etc/passwd\ninitrd = x\n", "x86_64")


def _template(name, version, arch="x86_64"):
    return parse_template(
        f"<template><name>t</name><os><name>{name}</name><version>{version}</version>"
        f"<arch>{arch}</arch><install type='url'><url>http://m/</url></install></os></template>"
    )


def test_debian_standard_paths():
    """Debian netboot paths use the codename and the Debian arch name."""
    assert debian_tree_paths(_template("Debian", "12")) == [
        BootFiles(
            "dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/linux",
            "dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/initrd.gz",
        )
    ]
    assert debian_iso_paths(_template("Debian", "12", "aarch64"))[0] == BootFiles(
        "install.a64/vmlinuz", "install.a64/initrd.gz"
    )


def test_ubuntu_tries_legacy_images_first():
    """Ubuntu 20.04 keeps the netboot installer under legacy-images; images/ is the fallback."""
    paths = debian_tree_paths(_template("Ubuntu", "20.04"))
    assert [p.kernel for p in paths] == [
        "dists/focal/main/installer-amd64/current/legacy-images/netboot/ubuntu-installer/amd64/linux",
        "dists/focal/main/installer-amd64/current/images/netboot/ubuntu-installer/amd64/linux",
    ]
    assert debian_codename(_template("Ubuntu", "24.04")) == "noble"


def test_messages_hide_url_passwords(tmp_path, tree):
    """A URL's password shows as *** in errors and log lines."""
    stub, fetcher = downloader(tmp_path, tree)
    log = []
    failure = settle(
        stub,
        ensureDeferred(fetcher.from_tree("http://user:hunter2@mirror.test/fedora/39/", "nothing", None, log.append)),
    )
    assert "hunter2" not in str(failure.value) and "user:***@mirror.test" in str(failure.value)
    assert log and not any("hunter2" in line for line in log)
