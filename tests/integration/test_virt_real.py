"""run_install against the real libvirtd + QEMU (software emulation), with the fake installer.

The guest is a real Debian kernel and a busybox initramfs (tests/support/fake_installer.py)
that finds the kickstart this test appended to its initrd, writes a result
derived from it onto the disk and powers off.  Needs a libvirtd on
qemu:///system: ``scripts/libvirt-up.sh`` (run by ``scripts/setup.sh --test``)
installs and starts one.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from imgfac_twisted.virt.connection import LibvirtConnection
from imgfac_twisted.virt.install import DOMAIN_PREFIX, InstallFailed, InstallSpec, run_install
from support import fake_installer

pytestmark = pytest.mark.slow

URI = "qemu:///system"
DISK_BYTES = 64 * 1024 * 1024
IDLE_TIMEOUT = 20
KICKSTART = b"# made by test_virt_real\nrootpw --plaintext s3cret\npoweroff\n"


@pytest.fixture(scope="module")
def libvirtd() -> None:
    """Skip (naming why) when no libvirtd answers on qemu:///system."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as error:
        pytest.skip(f"libvirtd cannot be reached on {URI} ({error}); scripts/libvirt-up.sh starts it")


@pytest_twisted.async_yield_fixture
async def connection(libvirtd: None) -> Any:
    from twisted.internet import reactor

    connection = LibvirtConnection(reactor, URI)
    connection.startService()
    yield connection
    await connection.stopService()


class Guest:
    """Files and records of one fake install: disk, initrd, console log, timed console lines."""

    def __init__(self, folder: Path, writes: bool, answer_file: tuple[str, bytes] | None) -> None:
        kernel = fake_installer.debian_kernel()
        initrd = fake_installer.initramfs(writes)
        if answer_file is not None:
            initrd = fake_installer.append_member(initrd, *answer_file)
        (folder / "initrd.img").write_bytes(initrd)
        with open(folder / "disk.raw", "wb") as disk:
            disk.truncate(DISK_BYTES)
        self.spec = InstallSpec(
            name=f"{DOMAIN_PREFIX}test-virt-{uuid.uuid4().hex[:8]}",
            disk_path=str(folder / "disk.raw"),
            kernel_path=str(kernel.bootable),
            initrd_path=str(folder / "initrd.img"),
            cmdline="console=ttyS0",
            console_log=str(folder / "console.log"),
            memory_mib=256,
            vcpus=1,
        )
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.progress: list[int] = []

    def run(self, connection: LibvirtConnection, inactivity: float, total: float) -> Any:
        from twisted.internet import reactor

        self.started = time.monotonic()
        return run_install(
            connection,
            self.spec,
            domain_type="qemu",
            clock=reactor,
            inactivity_timeout=inactivity,
            total_timeout=total,
            progress=self.progress.append,
            log=self.log,
            poll_interval=0.5,
        )

    def log(self, line: str) -> None:
        self.lines.append((time.monotonic() - self.started, line))

    def when(self, text: str) -> float:
        return next(at for at, line in self.lines if text in line)

    def disk_start(self) -> bytes:
        with open(self.spec.disk_path, "rb") as disk:
            return disk.read(64 * 1024)

    def defined_domains(self) -> list[str]:
        return subprocess.run(
            ["virsh", "-c", URI, "list", "--all", "--name"], check=True, capture_output=True, text=True
        ).stdout.split()


@pytest_twisted.ensureDeferred
async def test_fake_installer_runs_to_power_off(connection: LibvirtConnection, tmp_path: Path) -> None:
    """The guest finds the appended ks.cfg, writes its digest and bytes to the disk and powers off: done."""
    guest = Guest(tmp_path, writes=True, answer_file=("ks.cfg", KICKSTART))
    assert await guest.run(connection, inactivity=60, total=300) is None
    took = time.monotonic() - guest.started
    result = fake_installer.parse_result(guest.disk_start())
    assert result == fake_installer.InstallResult("ks.cfg", fake_installer.sha256_hex(KICKSTART), KICKSTART)
    texts = [line for _, line in guest.lines]
    assert "fake-installer: installing from /ks.cfg" in texts and fake_installer.WROTE_MARKER in texts
    assert guest.progress[-1] == 100 and guest.progress == sorted(guest.progress)
    assert guest.spec.name not in guest.defined_domains()
    print(
        f"\nfake install: done in {took:.1f} s; first console line at {guest.lines[0][0]:.1f} s, "
        f"/init at {guest.when('fake-installer: started'):.1f} s, "
        f"result written at {guest.when(fake_installer.WROTE_MARKER):.1f} s"
    )


@pytest_twisted.ensureDeferred
async def test_installer_that_never_writes_fails_by_inactivity(connection: LibvirtConnection, tmp_path: Path) -> None:
    """An installer that prints but never writes ends in InstallFailed naming the inactivity, with its console."""
    guest = Guest(tmp_path, writes=False, answer_file=("ks.cfg", KICKSTART))
    with pytest.raises(InstallFailed) as failed:
        # The emulated boot alone takes about 10 s here: give the installer time to print.
        await guest.run(connection, inactivity=IDLE_TIMEOUT, total=300)
    took = time.monotonic() - guest.started
    message = str(failed.value)
    assert message.startswith(f"no disk activity for {IDLE_TIMEOUT} s") and fake_installer.IDLE_MARKER in message
    assert not guest.disk_start().strip(b"\0")
    assert guest.spec.name not in guest.defined_domains()
    assert IDLE_TIMEOUT <= took < IDLE_TIMEOUT + 30
    print(f"\nidle install: failed after {took:.1f} s")
