"""The boot test: its watch rules on a fake libvirt and a Clock, its domain XML, and a real libvirtd
booting a disk that has no boot loader (the failure must be quick, named, and leave nothing behind)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from twisted.internet.task import Clock

from imgfac_twisted.testing import FakeLibvirtConnection, InlineDoor, result_of
from imgfac_twisted.virt.boot import (
    BOOT_DOMAIN_PREFIX,
    NO_BOOT_LOADER,
    OVERLAY_NAME,
    POWERED_OFF,
    BootTestFailed,
    LibvirtBootTester,
    judge_boot_line,
    thd_has_boot_code,
)
from imgfac_twisted.virt.domain import domain_xml
from imgfac_twisted.virt.install import InstallSpec, WatchRules
from support.watch import WatchRun


def boot_spec(tmp_path: Path) -> InstallSpec:
    overlay = tmp_path / OVERLAY_NAME
    overlay.write_bytes(b"")
    return InstallSpec(
        name=BOOT_DOMAIN_PREFIX + "b1",
        disk_path=str(overlay),
        kernel_path=None,
        initrd_path=None,
        cmdline=None,
        console_log=str(tmp_path / "console.log"),
        memory_mib=512,
        vcpus=2,
        disk_format="qcow2",
    )


class Boot(WatchRun):
    """One watch with the boot test's rules on a FakeLibvirtConnection and a Clock."""

    def __init__(self, tmp_path: Path, timeout: float = 60) -> None:
        rules = WatchRules(activity="boot to a login prompt", judge=judge_boot_line, power_off_failure=POWERED_OFF)
        super().__init__(boot_spec(tmp_path), inactivity=timeout, total=timeout, rules=rules)


def test_a_login_prompt_passes_and_removes_the_domain(tmp_path: Path) -> None:
    """agetty's prompt, printed without a newline, ends the boot test as passed; the domain is removed."""
    boot = Boot(tmp_path)
    boot.advance(2)
    assert not boot.result.called
    boot.console(
        b"[  OK  ] Reached target multi-user.target\r\n\r\nDebian GNU/Linux 12 bootme ttyS0\r\n\r\nbootme login: "
    )
    boot.advance(1)
    assert result_of(boot.result) is None
    assert boot.gone()
    assert "Debian GNU/Linux 12 bootme ttyS0" in boot.lines


def test_the_word_login_in_a_line_is_no_prompt(tmp_path: Path) -> None:
    """Only a line that ends with ``login:`` is the prompt; systemd's messages about logins are not."""
    assert judge_boot_line("Starting systemd-logind.service - User Login Management...") is None
    assert judge_boot_line("[  OK  ] Started systemd-logind.service - User Login Management.") is None
    assert judge_boot_line("localhost login:").done
    assert judge_boot_line("fedora login: ").done


@pytest.mark.parametrize(
    "line, meaning",
    [
        (
            "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
            "the kernel panicked",
        ),
        ('You are in emergency mode. After logging in, type "journalctl -xb" to view', "emergency shell"),
        ("Give root password for maintenance", "emergency shell"),
        ("ALERT!  UUID=1234 does not exist.  Dropping to a shell!", "did not find the root file system"),
        ("grub rescue>", "grub rescue"),
    ],
)
def test_a_broken_boot_fails_at_once_naming_what_it_saw(tmp_path: Path, line: str, meaning: str) -> None:
    """Panics, emergency shells, an initramfs shell and GRUB's rescue prompt fail the test before its timeout,
    with what they mean and the console's last lines in the reason."""
    boot = Boot(tmp_path, timeout=600)
    boot.console(b"Loading Linux 6.1.0-28-amd64 ...\n" + line.encode() + b"\n")
    boot.advance(2)
    message = boot.failure_message()
    assert meaning in message and message.endswith(line)
    assert "Loading Linux" in message
    assert boot.gone()


def test_powering_off_before_a_prompt_fails(tmp_path: Path) -> None:
    """A guest that stops (the firmware resets when nothing boots) fails the test, saying so."""
    boot = Boot(tmp_path)
    boot.advance(1)
    boot.connection.libvirt.domains[boot.spec.name].power_off()
    boot.advance(1)
    assert boot.failure_message().startswith(POWERED_OFF)
    assert boot.gone()


def test_no_prompt_in_time_fails_with_the_console(tmp_path: Path) -> None:
    """Past its timeout the test fails, naming the timeout and ending with the console's last lines."""
    boot = Boot(tmp_path, timeout=30)
    boot.console(b"Welcome to GRUB!\n")
    boot.advance(31)
    message = boot.failure_message()
    assert message.startswith("the boot to a login prompt took longer than 30 s")
    assert message.endswith("Welcome to GRUB!")
    assert boot.gone()


def test_boot_domain_xml_boots_the_overlay_through_the_firmware(tmp_path: Path) -> None:
    """No kernel of ours: the firmware boots the qcow2 overlay's boot loader, and resets at once if none."""
    domain = etree.fromstring(domain_xml(boot_spec(tmp_path), "qemu"))
    assert domain.find("os/kernel") is None and domain.find("os/cmdline") is None
    assert domain.find("os/boot").get("dev") == "hd"
    assert domain.find("os/bios").get("rebootTimeout") == "0"
    assert domain.find("devices/video/model").get("type") == "vga", "GRUB's console needs a display adapter"
    disk = domain.find("devices/disk")
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file").endswith(OVERLAY_NAME)


def test_a_disk_without_boot_code_fails_before_any_domain(tmp_path: Path) -> None:
    """An empty boot sector (a partition table, but no boot loader) fails the test at once, naming it;
    no overlay is made and no domain defined."""
    base = tmp_path / "base.raw"
    with open(base, "wb") as disk:
        disk.truncate(1024 * 1024)
        disk.seek(446)
        disk.write(b"\x80" + bytes(15))
        disk.seek(510)
        disk.write(b"\x55\xaa")
    connection = FakeLibvirtConnection()
    tester = LibvirtBootTester(connection, Clock(), InlineDoor(), domain_type="qemu", timeout=60, memory_mib=256)
    with pytest.raises(BootTestFailed) as failed:
        result_of(tester.test(str(base), str(tmp_path), "b1", lambda line: None))
    assert str(failed.value) == f"the boot test failed: {NO_BOOT_LOADER}"
    assert connection.libvirt.domains == {} and not (tmp_path / OVERLAY_NAME).exists()
    assert thd_has_boot_code(str(base)) is False
    base.write_bytes(b"\xeb\xfe")
    assert thd_has_boot_code(str(base)) is True
