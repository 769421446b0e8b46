"""The boot test against the real libvirtd and QEMU, with disks that do not boot: each fails with its reason,
leaves no domain and no overlay, and the base image is byte for byte what it was (the boot test on fakes:
tests/unit/test_virt_boot.py; a real system that boots: test_real_debian.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from imgfac_twisted.doors import ThreadDoor
from imgfac_twisted.virt.boot import (
    BOOT_DOMAIN_PREFIX,
    NO_BOOT_LOADER,
    OVERLAY_NAME,
    POWERED_OFF,
    BootTestFailed,
    LibvirtBootTester,
)

pytestmark = pytest.mark.slow

URI = "qemu:///system"
DISK_BYTES = 64 * 1024 * 1024
MBR_SIGNATURE_AT = 510
#: One partition entry (type 0x83, from sector 2048), as a partitioning tool writes it.
PARTITION_ENTRY = (
    bytes([0x80, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF])
    + (2048).to_bytes(4, "little")
    + ((DISK_BYTES // 512 - 2048).to_bytes(4, "little"))
)


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


def _disk(path: Path, boot_code: bytes, signature: bool) -> str:
    """A sparse disk with data on it, ``boot_code`` at its start and a partition table (with the boot signature
    when ``signature``); its sha256."""
    with open(path, "wb") as disk:
        disk.truncate(DISK_BYTES)
        disk.write(boot_code)
        disk.seek(446)
        disk.write(PARTITION_ENTRY)
        if signature:
            disk.seek(MBR_SIGNATURE_AT)
            disk.write(b"\x55\xaa")
        disk.seek(1024 * 1024)
        disk.write(os.urandom(4096))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _boot_test(tmp_path: Path, build_id: str, timeout: float) -> Generator[Any, Any, tuple[BootTestFailed, float]]:
    """Run the real boot test of ``tmp_path/base.raw``; the failure and the seconds it took."""
    from twisted.internet import reactor

    from imgfac_twisted.virt.connection import LibvirtConnection

    _libvirtd_or_skip()
    connection = LibvirtConnection(reactor, URI)
    door = ThreadDoor(reactor, "disk", threads=1)
    connection.startService()
    door.startService()
    lines: list[str] = []
    try:
        tester = LibvirtBootTester(connection, reactor, door, domain_type="qemu", timeout=timeout, memory_mib=256)
        started = reactor.seconds()
        with pytest.raises(BootTestFailed) as failed:
            yield tester.test(str(tmp_path / "base.raw"), str(tmp_path), build_id, lines.append)
        took = reactor.seconds() - started
    finally:
        yield connection.stopService()
        yield door.stopService()
    return failed.value, took


def _left_nothing(tmp_path: Path, build_id: str, before: str) -> None:
    assert _domains(BOOT_DOMAIN_PREFIX + build_id) == []
    assert not (tmp_path / OVERLAY_NAME).exists()
    assert hashlib.sha256((tmp_path / "base.raw").read_bytes()).hexdigest() == before


@pytest_twisted.inlineCallbacks
def test_a_partitioned_disk_without_boot_code_fails_before_any_vm(tmp_path: Path) -> Any:
    """A disk with a partition table but an empty boot sector (firmware would run zeros till the timeout)
    fails at once, naming the missing boot loader."""
    before = _disk(tmp_path / "base.raw", b"", signature=True)
    failure, took = yield from _boot_test(tmp_path, "no-code", timeout=120)
    assert str(failure) == f"the boot test failed: {NO_BOOT_LOADER}"
    assert took < 5
    _left_nothing(tmp_path, "no-code", before)


@pytest_twisted.inlineCallbacks
def test_a_disk_the_firmware_refuses_resets_and_fails_quickly(tmp_path: Path) -> Any:
    """Through a real VM: a disk without the boot signature is no bootable disk; the firmware resets at once,
    and the boot test fails saying the guest stopped before a login prompt."""
    before = _disk(tmp_path / "base.raw", os.urandom(440), signature=False)
    failure, took = yield from _boot_test(tmp_path, "not-bootable", timeout=120)
    assert str(failure).startswith("the boot test failed: " + POWERED_OFF)
    assert took < 60, f"a disk the firmware refuses took {took:.0f} s to fail"
    _left_nothing(tmp_path, "not-bootable", before)


@pytest_twisted.inlineCallbacks
def test_a_boot_that_never_reaches_a_prompt_fails_at_its_timeout(tmp_path: Path) -> Any:
    """Through a real VM: boot code that spins forever (``jmp $``) fails the boot test at its timeout, naming
    it; the domain is destroyed whatever the end."""
    before = _disk(tmp_path / "base.raw", b"\xeb\xfe", signature=True)
    failure, took = yield from _boot_test(tmp_path, "spins", timeout=15)
    assert str(failure).startswith("the boot test failed: the boot to a login prompt took longer than 15 s")
    assert 14 < took < 60
    _left_nothing(tmp_path, "spins", before)
