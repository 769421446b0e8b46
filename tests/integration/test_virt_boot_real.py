"""The boot test against the real libvirtd and QEMU: a disk without a boot loader fails quickly and leaves
no domain (the boot test on fakes: tests/unit/test_virt_boot.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from imgfac_twisted.virt.boot import (
    BOOT_DOMAIN_PREFIX,
    OVERLAY_NAME,
    POWERED_OFF,
    BootTestFailed,
    LibvirtBootTester,
)

URI = "qemu:///system"


def _libvirtd_or_skip() -> None:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as error:
        pytest.skip(f"libvirtd cannot be reached on {URI} ({error}); scripts/libvirt-up.sh starts it")


def _domains(name: str) -> list[str]:
    listed = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True)
    return [domain for domain in listed.stdout.split() if domain == name]


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_real_libvirt_a_disk_without_boot_loader_fails_quickly_and_leaves_nothing(tmp_path: Path) -> Any:
    """Through the real libvirtd and QEMU: a disk with data but no boot loader fails the boot test well
    before its timeout (the firmware resets at once), the domain and overlay are gone, and the base image
    is byte for byte what it was."""
    from twisted.internet import reactor

    from imgfac_twisted.virt.connection import LibvirtConnection

    _libvirtd_or_skip()
    base = tmp_path / "base.raw"
    with open(base, "wb") as disk:
        disk.truncate(64 * 1024 * 1024)
        disk.seek(1024 * 1024)
        disk.write(os.urandom(4096))
    before = hashlib.sha256(base.read_bytes()).hexdigest()
    connection = LibvirtConnection(reactor, URI)
    connection.startService()
    lines: list[str] = []
    try:
        tester = LibvirtBootTester(connection, reactor, domain_type="qemu", timeout=120, memory_mib=256)
        started = reactor.seconds()
        with pytest.raises(BootTestFailed) as failed:
            yield tester.test(str(base), str(tmp_path), "no-loader", lines.append)
        took = reactor.seconds() - started
    finally:
        yield connection.stopService()
    assert str(failed.value).startswith("the boot test failed: " + POWERED_OFF)
    assert took < 60, f"a disk without a boot loader took {took:.0f} s to fail"
    assert _domains(BOOT_DOMAIN_PREFIX + "no-loader") == []
    assert not (tmp_path / OVERLAY_NAME).exists()
    assert hashlib.sha256(base.read_bytes()).hexdigest() == before
