"""The boot test: an installed base image boots once, to a login prompt, before it is handed out.

The guest runs on a throwaway qcow2 overlay backed by the raw base image,
so nothing it writes at boot (machine-id, SSH host keys, logs, journal)
reaches the image: libvirt opens the backing file read-only, and the
overlay is removed afterwards, whatever the end.  The firmware boots the
disk through its own boot loader, exactly as a cloud would.

The watch is the install watcher's (``virt.install``), with other rules:
the test passes when the serial console shows a login prompt, and fails
when it shows a kernel panic, an emergency or rescue shell, when the guest
powers off or resets first, when QEMU crashes, or after ``timeout`` seconds.
A disk whose master boot record holds no boot code fails before any VM.
Cancelling the test destroys its domain before the cancellation is seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from ..doors import IDoor
from ..errors import ImageFactoryError
from ..processes import ProcessFailed, run_process
from .connection import LibvirtConnection
from .install import run_install
from .spec import DOMAIN_PREFIX, InstallFailed, InstallSpec, Verdict, WatchRules

#: The boot test's domain: ``imgfac-boot-<build id>``; a killed daemon's is removed at the next start
#: like an install's (its files lie in the state directory).
BOOT_DOMAIN_PREFIX = DOMAIN_PREFIX + "boot-"
OVERLAY_NAME = "boot-test.qcow2"
CONSOLE_NAME = "boot-test-console.log"
QEMU_IMG_TIMEOUT = 60.0
#: Software emulation boots Debian 12 in about 41 s with two vCPUs; one is markedly slower.
BOOT_VCPUS = 2

#: agetty's prompt ("bootme login: "), which it prints without ending the line.
LOGIN_PROMPT = re.compile(r"\blogin:\s*$")
#: Console lines that end a boot test at once, with what they mean.
BOOT_FAILURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Kernel panic"), "the kernel panicked"),
    (
        re.compile(r"You are in emergency mode|Give root password for maintenance|Entering emergency mode"),
        "the system fell into its emergency shell",
    ),
    (re.compile(r"You are in rescue mode"), "the system fell into its rescue shell"),
    (re.compile(r"Dropping to a shell|^\(initramfs\)"), "the initramfs did not find the root file system"),
    (re.compile(r"grub rescue>"), "GRUB did not find its files (grub rescue)"),
)
POWERED_OFF = "the guest powered off or reset before a login prompt"

_log = Logger()


#: The boot code of a master boot record: the disk's first 440 bytes (then its signature and partition table).
MBR_BOOT_CODE_BYTES = 440
NO_BOOT_LOADER = (
    "the disk has no boot loader (the boot code of its master boot record is empty): "
    "the firmware would find nothing to run"
)


class BootTestFailed(ImageFactoryError):
    """The base image did not boot to a login prompt; the message says why and ends with the console."""


def judge_boot_line(line: str) -> Verdict | None:
    """What one console line says of a booting system: a login prompt, a failure, or nothing yet."""
    if LOGIN_PROMPT.search(line):
        return Verdict(done=True)
    for pattern, meaning in BOOT_FAILURES:
        if pattern.search(line):
            return Verdict(done=False, reason=meaning)
    return None


class LibvirtBootTester:
    """Boot-tests base images on a libvirt connection (see the module docstring)."""

    def __init__(
        self,
        connection: LibvirtConnection,
        reactor: Any,
        door: IDoor,
        *,
        domain_type: str,
        timeout: float,
        memory_mib: int,
        poll_interval: float = 1.0,
    ) -> None:
        self._connection = connection
        self._reactor = reactor
        self._door = door
        self._domain_type = domain_type
        self._timeout = timeout
        self._memory_mib = memory_mib
        self._poll_interval = poll_interval

    def test(self, image_path: str, work_dir: str, build_id: str, log: Callable[[str], None]) -> Deferred[None]:
        """Fire (None) once the raw image at ``image_path`` booted to a login prompt; else BootTestFailed."""
        return ensureDeferred(self._test(image_path, work_dir, build_id, log))

    async def _test(self, image_path: str, work_dir: str, build_id: str, log: Callable[[str], None]) -> None:
        # Firmware that jumps into an empty boot sector runs zeros until the timeout: say why at once instead.
        if not await self._door.run(thd_has_boot_code, image_path):
            raise BootTestFailed(f"the boot test failed: {NO_BOOT_LOADER}")
        overlay = os.path.join(work_dir, OVERLAY_NAME)
        try:
            await self._make_overlay(image_path, overlay)
            started = self._reactor.seconds()
            log(
                f"boot test: booting the base image (on a throwaway overlay) until a login prompt, "
                f"at most {self._timeout:g} s"
            )
            await self._boot(overlay, work_dir, build_id, log)
            log(f"boot test: passed, a login prompt after {self._reactor.seconds() - started:.0f} s")
        finally:
            await self._door.run(_remove, overlay)

    async def _make_overlay(self, image_path: str, overlay: str) -> None:
        # qemu-img create replaces an overlay a killed daemon left behind.
        try:
            await run_process(
                self._reactor,
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", os.path.abspath(image_path), overlay],
                timeout=QEMU_IMG_TIMEOUT,
            )
        except ProcessFailed as error:
            raise BootTestFailed(f"the boot test failed: its overlay could not be made: {error.message}") from error

    async def _boot(self, overlay: str, work_dir: str, build_id: str, log: Callable[[str], None]) -> None:
        spec = InstallSpec(
            name=BOOT_DOMAIN_PREFIX + build_id,
            disk_path=overlay,
            kernel_path=None,
            initrd_path=None,
            cmdline=None,
            console_log=os.path.join(work_dir, CONSOLE_NAME),
            memory_mib=self._memory_mib,
            vcpus=BOOT_VCPUS,
            disk_format="qcow2",
        )
        rules = WatchRules(activity="boot to a login prompt", judge=judge_boot_line, power_off_failure=POWERED_OFF)
        try:
            await run_install(
                self._connection,
                spec,
                domain_type=self._domain_type,
                clock=self._reactor,
                inactivity_timeout=self._timeout,
                total_timeout=self._timeout,
                progress=lambda percent: None,
                log=log,
                poll_interval=self._poll_interval,
                rules=rules,
            )
        except InstallFailed as error:
            raise BootTestFailed(f"the boot test failed: {error.message}") from error


def thd_has_boot_code(image_path: str) -> bool:
    """Whether the disk's master boot record holds any boot code (blocking: run it on a door)."""
    with open(image_path, "rb") as disk:
        return any(disk.read(MBR_BOOT_CODE_BYTES))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
