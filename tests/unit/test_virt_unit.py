"""The virt layer without a libvirtd: the install state machine on a fake libvirt and a Clock,
the domain XML, and libvirt's own ``test:///default`` driver behind the real LibvirtConnection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock

from imgfac_twisted.config import merge_config
from imgfac_twisted.errors import ConfigError
from imgfac_twisted.testing import FakeLibvirtConnection, libvirt_error, result_of
from imgfac_twisted.virt import install
from imgfac_twisted.virt.domain import domain_xml
from imgfac_twisted.virt.install import (
    DOMAIN_PREFIX,
    PROGRESS_CEILING,
    PROGRESS_STARTED,
    InstallFailed,
    InstallSpec,
    run_install,
)
from support.watch import WatchRun

GiB = 1024**3


def make_spec(
    tmp_path: Path,
    name: str = "b1",
    iso: str | None = None,
    cmdline: str = "quiet console=ttyS0",
    disk_size: int = 4 * GiB,
) -> InstallSpec:
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as handle:
        handle.truncate(disk_size)
    return InstallSpec(
        name=DOMAIN_PREFIX + name,
        disk_path=str(disk),
        kernel_path=str(tmp_path / "vmlinuz"),
        initrd_path=str(tmp_path / "initrd.img"),
        cmdline=cmdline,
        console_log=str(tmp_path / "console.log"),
        iso_path=iso,
        memory_mib=512,
        vcpus=2,
    )


class Install(WatchRun):
    """One install's watch on a FakeLibvirtConnection and a Clock, with what it reported."""

    def __init__(
        self, tmp_path: Path, inactivity: float = 10, total: float = 100, hold: bool = False, **spec: Any
    ) -> None:
        super().__init__(make_spec(tmp_path, **spec), inactivity=inactivity, total=total, hold=hold)


def test_guest_powering_off_is_done_and_the_domain_is_removed(tmp_path: Path) -> None:
    """The domain is defined and started; when the guest powers off the install fires None, then nothing is left."""
    run = Install(tmp_path)
    assert run.domain.isActive() and '<domain type="qemu">' in run.domain.xml
    run.console(b"Installing...\n")
    run.domain.write(4096)
    run.advance(3)
    assert not run.result.called
    run.domain.power_off()
    run.advance(1)
    assert result_of(run.result) is None
    assert run.gone() and run.connection.libvirt.undefined == [run.spec.name]
    assert run.lines == ["Installing..."]
    assert run.progress[0] == PROGRESS_STARTED and run.progress[-1] == 100


def test_a_callers_callback_returning_a_deferred_is_waited_for(tmp_path: Path) -> None:
    """The result is an ordinary Deferred for the caller: a callback returning a Deferred pauses its chain."""
    run = Install(tmp_path)
    later: Deferred = Deferred()
    seen: list[Any] = []
    run.result.addCallback(lambda _: later)
    run.result.addCallback(seen.append)
    run.domain.power_off()
    run.advance(1)
    assert seen == []
    later.callback("after")
    assert seen == ["after"]


def test_no_disk_activity_fails_with_the_console_and_destroys_the_domain(tmp_path: Path) -> None:
    """Writes keep the install alive; after inactivity_timeout without any it fails, naming the time."""
    run = Install(tmp_path, inactivity=10)
    for _ in range(15):
        run.domain.write(512)
        run.advance(1)
    run.console(b"waiting for the mirror\n")
    run.advance(9)
    assert not run.result.called
    run.advance(1)
    message = run.failure_message()
    assert message.startswith("no disk activity for 10 s")
    assert message.endswith("waiting for the mirror")
    assert run.gone() and run.connection.libvirt.destroyed == [run.spec.name]


def test_reads_alone_are_no_activity(tmp_path: Path) -> None:
    """A guest that never writes fails by inactivity even though it runs (booting only reads)."""
    run = Install(tmp_path, inactivity=5)
    run.advance(5)
    assert "no disk activity for 5 s" in run.failure_message()


def test_whole_install_past_its_timeout_fails(tmp_path: Path) -> None:
    """A busy guest still fails when the whole install passes total_timeout."""
    run = Install(tmp_path, inactivity=10, total=30)
    for _ in range(29):
        run.domain.write(1 << 20)
        run.advance(1)
    assert not run.result.called
    run.advance(1)
    assert run.failure_message().startswith("the install took longer than 30 s")
    assert run.gone()


def test_total_timeout_holds_while_a_libvirt_call_hangs(tmp_path: Path) -> None:
    """The total timeout is a timer of its own: it fires even when a poll never returns."""
    run = Install(tmp_path, inactivity=1000, total=20)
    run.advance(2)
    run.connection.hold = True
    run.advance(30)
    assert not run.result.called
    run.connection.release()
    assert run.failure_message().startswith("the install took longer than 20 s")
    assert run.gone()


def test_crash_fails(tmp_path: Path) -> None:
    """A domain that shuts off as CRASHED fails the install as a crash."""
    run = Install(tmp_path)
    run.console(b"Kernel panic - not syncing\n")
    run.domain.crash()
    run.advance(1)
    message = run.failure_message()
    assert message.startswith("the guest crashed") and "Kernel panic" in message
    assert run.gone()


def test_domain_destroyed_from_outside_fails(tmp_path: Path) -> None:
    """Shut off for another reason than the guest's own power-off is a failure, not done."""
    run = Install(tmp_path)
    run.domain.destroy()
    run.advance(1)
    assert "stopped unexpectedly" in run.failure_message() and run.gone()


def test_define_error_fails_with_libvirts_message(tmp_path: Path) -> None:
    """A libvirt error while defining the domain is the reason, in libvirt's words."""
    clock, connection = Clock(), FakeLibvirtConnection()
    connection.libvirt.failures["defineXML"] = libvirt_error("XML error: bad kernel path", libvirt.VIR_ERR_XML_ERROR)
    result = run_install(
        connection,
        make_spec(tmp_path),
        domain_type="kvm",
        clock=clock,
        inactivity_timeout=5,
        total_timeout=10,
        progress=lambda _: None,
        log=lambda _: None,
    )
    with pytest.raises(InstallFailed, match="could not be started: libvirt: XML error: bad kernel path"):
        result_of(result)


def test_start_error_still_undefines(tmp_path: Path) -> None:
    """A domain defined but not started is undefined too."""
    clock, connection = Clock(), FakeLibvirtConnection()
    original = connection.libvirt.defineXML

    def define_then_break(xml: str) -> Any:
        domain = original(xml)
        domain.failures["create"] = libvirt_error(
            "internal error: qemu unexpectedly closed the monitor", libvirt.VIR_ERR_INTERNAL_ERROR
        )
        return domain

    connection.libvirt.defineXML = define_then_break  # type: ignore[method-assign]
    result = run_install(
        connection,
        make_spec(tmp_path),
        domain_type="qemu",
        clock=clock,
        inactivity_timeout=5,
        total_timeout=10,
        progress=lambda _: None,
        log=lambda _: None,
    )
    with pytest.raises(InstallFailed, match="qemu unexpectedly closed the monitor"):
        result_of(result)
    assert connection.libvirt.domains == {}


def test_libvirt_error_while_watching_fails(tmp_path: Path) -> None:
    """Errors reading the domain, OBSERVE_ATTEMPTS polls in a row, fail the install with libvirt's message."""
    run = Install(tmp_path)
    run.advance(1)
    for _ in range(install.OBSERVE_ATTEMPTS):
        assert not run.result.called
        run.domain.failures["state"] = libvirt_error(
            "Cannot recv data: Connection reset by peer", libvirt.VIR_ERR_SYSTEM_ERROR
        )
        run.advance(1)
    assert "libvirt: Cannot recv data: Connection reset by peer" in run.failure_message()
    assert run.gone()


def test_a_passing_libvirt_error_is_tried_again(tmp_path: Path) -> None:
    """One failed poll (QEMU exiting while libvirt still calls the domain running) does not fail the install."""
    run = Install(tmp_path)
    run.advance(1)
    run.domain.failures["blockStats"] = libvirt_error(
        "Unable to read from monitor: Connection reset by peer", libvirt.VIR_ERR_INTERNAL_ERROR
    )
    run.advance(1)
    assert not run.result.called
    run.domain.power_off()
    run.advance(1)
    assert result_of(run.result) is None


def test_cancel_destroys_the_domain_before_the_caller_hears(tmp_path: Path) -> None:
    """Cancelling errbacks CancelledError only once the domain is destroyed and undefined."""
    run = Install(tmp_path)
    run.advance(2)
    seen: list[bool] = []
    run.result.addErrback(lambda failure: seen.append(failure.check(CancelledError) is not None and run.gone()))
    run.connection.hold = True
    run.result.cancel()
    assert seen == [] and not run.gone()
    run.connection.release()
    assert seen == [True]
    assert run.connection.libvirt.destroyed == [run.spec.name]


def test_cancel_while_starting_waits_for_the_start_then_removes(tmp_path: Path) -> None:
    """A cancel during define/start lets the start land, then destroys and undefines."""
    run = Install(tmp_path, hold=True)
    seen: list[Any] = []
    run.result.addErrback(lambda failure: seen.append(failure.type))
    run.result.cancel()
    assert seen == []
    run.connection.release()
    assert seen == [CancelledError]
    assert run.gone() and run.connection.libvirt.undefined == [run.spec.name]


def test_console_lines_are_passed_whole_and_clean(tmp_path: Path) -> None:
    """Partial lines wait for their end; escapes and control characters go; bad UTF-8 is replaced."""
    run = Install(tmp_path)
    run.console(b"first li")
    run.advance(1)
    assert run.lines == []
    run.console(b"ne\r\n\x1b[1;32m  OK  \x1b[0m] Started\x07 udev\nbad \xff byte\nprogress 10%\rprogress 90%\nlast")
    run.advance(1)
    assert run.lines == ["first line", "  OK  ] Started udev", "bad \ufffd byte", "progress 90%"]
    run.domain.power_off()
    run.advance(1)
    assert run.lines[-1] == "last"


def test_failure_reason_ends_with_the_last_twenty_console_lines(tmp_path: Path) -> None:
    """Only the last CONSOLE_LINES_IN_REASON lines are quoted, in order."""
    run = Install(tmp_path, inactivity=3)
    run.console(b"".join(b"line %d\n" % number for number in range(30)))
    run.advance(3)
    quoted = run.failure_message().split("\n")[1:]
    assert quoted == [f"line {number}" for number in range(10, 30)]


def test_failure_without_console_says_so(tmp_path: Path) -> None:
    """An empty console is named in the reason."""
    run = Install(tmp_path, inactivity=2)
    run.advance(2)
    assert run.failure_message().endswith("the console printed nothing")


def test_progress_moves_with_writes_and_time_never_backwards(tmp_path: Path) -> None:
    """Progress starts at PROGRESS_STARTED, rises with bytes written and time, stays <= the ceiling, ends at 100."""
    run = Install(tmp_path, total=1000, disk_size=4 * GiB)
    for _ in range(20):
        run.domain.write(50 * 1024 * 1024)
        run.advance(1)
    middle = run.progress[-1]
    assert PROGRESS_STARTED < middle < PROGRESS_CEILING
    for _ in range(10):
        run.advance(1)
        run.domain.write(1)
    for _ in range(40):
        run.domain.write(200 * 1024 * 1024)
        run.advance(1)
    assert run.progress[-1] == PROGRESS_CEILING
    run.domain.power_off()
    run.advance(1)
    assert run.progress == sorted(run.progress) and len(set(run.progress)) == len(run.progress)
    assert run.progress[-1] == 100 and max(run.progress[:-1]) <= PROGRESS_CEILING


def test_progress_moves_with_time_alone(tmp_path: Path) -> None:
    """Without big writes the figure still moves with the time spent against the total timeout."""
    run = Install(tmp_path, inactivity=1000, total=100)
    for _ in range(50):
        run.domain.write(1)
        run.advance(1)
    assert run.progress[-1] == PROGRESS_STARTED + (PROGRESS_CEILING - PROGRESS_STARTED) // 2


def test_unknown_domain_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kvm, qemu"):
        run_install(
            FakeLibvirtConnection(),
            make_spec(tmp_path),
            domain_type="xen",
            clock=Clock(),
            inactivity_timeout=1,
            total_timeout=1,
            progress=lambda _: None,
            log=lambda _: None,
        )


# What debian-installer's text frontend (cdebconf) prints for a select question it was not given an answer to,
# under GNU screen on the serial port: the title underlined, the question, the choices, then the prompt, with
# no newline after it, while screen redraws its status line.
DEBIAN_INSTALLER_QUESTION = (
    b"\x1b[1;1H\x1b[JChoose a mirror of the Debian archive\r\n"
    b"-------------------------------------\r\n\r\n"
    b"The goal is to find a mirror of the Debian archive that is close to you on the network.\r\n"
    b"Debian archive mirror country:\r\n"
    b"  1: enter information manually,  2: Argentina,  3: Australia,\r\n"
    b"Prompt: '?' for help, default=1> "
)
SCREEN_STATUS = b"\x1b7\x1b[24;1H\x1b[7m 0 installer  1 shell  2 log \x1b[27m\x1b[K\x1b8"


def test_an_installer_asking_a_question_fails_at_once_with_the_question(tmp_path: Path) -> None:
    """The d-i prompt (left without a newline, behind screen's redraws) fails the install on the next poll,
    long before the inactivity timeout; the reason quotes the question, then the console's last lines."""
    run = Install(tmp_path, inactivity=300)
    run.console(b"Starting the installer\n")
    run.domain.write(4096)
    run.advance(2)
    assert not run.result.called
    run.console(DEBIAN_INSTALLER_QUESTION + SCREEN_STATUS * 3)
    run.advance(1)
    message = run.failure_message()
    assert message.startswith(
        "the installer stopped to ask a question: Choose a mirror of the Debian archive The goal is to find a mirror "
        "of the Debian archive that is close to you on the network. Debian archive mirror country: 1: enter "
        "information manually, 2: Argentina, 3: Australia,; the console's last lines:\n"
    )
    # The prompt, then screen's status line once: its redraws are dropped.
    assert message.endswith("\nPrompt: '?' for help, default=1>\n 0 installer  1 shell  2 log")
    assert run.gone() and run.clock.seconds() == 3
    assert run.lines.count(" 0 installer  1 shell  2 log") == 1


def test_anaconda_asking_in_text_mode_fails_at_once(tmp_path: Path) -> None:
    """Anaconda's text hub ends with 'Please make a selection from the above': the screen since its rule is quoted."""
    run = Install(tmp_path, inactivity=300)
    run.console(
        b"Starting installer, one moment...\n" + b"=" * 80 + b"\n" + b"=" * 80 + b"\n"
        b"Installation\n\n1) [x] Language settings\n2) [!] Installation Destination\n"
        b"Please make a selection from the above ['c' to continue, 'q' to quit, 'r' to\nrefresh]: "
    )
    run.advance(1)
    message = run.failure_message()
    assert message.startswith(
        "the installer stopped to ask a question: Installation 1) [x] Language settings "
        "2) [!] Installation Destination; the console's last lines:\n"
    )


def test_a_console_without_a_prompt_is_no_question(tmp_path: Path) -> None:
    """Installer output that merely mentions help or lists choices does not stop the install."""
    run = Install(tmp_path, inactivity=300)
    run.console(b"Choose a mirror\n---------------\n  1: Argentina,\nPrompt: press '?' to see help\n")
    run.advance(5)
    assert not run.result.called
    run.domain.power_off()
    run.advance(1)
    assert result_of(run.result) is None


def test_unreadable_console_is_said_once_and_named_in_the_reason(tmp_path: Path) -> None:
    """A console log that cannot be read does not fail the install; the build log and the reason say why."""
    run = Install(tmp_path, inactivity=3)
    os.mkdir(run.spec.console_log)  # reading a directory fails with EISDIR
    run.advance(3)
    message = run.failure_message()
    assert message.startswith("no disk activity for 3 s; the console log") and "Is a directory" in message
    assert len(run.lines) == 1 and "cannot be read" in run.lines[0]


# --- the domain XML ----------------------------------------------------------------------------------------------


def test_domain_xml_shape(tmp_path: Path) -> None:
    """Direct kernel boot, ACPI, a virtio raw disk, user networking, the serial console to a file, no graphics."""
    spec = make_spec(tmp_path)
    domain = etree.fromstring(domain_xml(spec, "qemu"))
    assert domain.tag == "domain" and domain.get("type") == "qemu"
    assert domain.findtext("name") == spec.name
    assert domain.findtext("memory") == "512" and domain.find("memory").get("unit") == "MiB"
    assert domain.findtext("vcpu") == "2"
    assert domain.findtext("os/type") == "hvm"
    assert [domain.findtext(f"os/{tag}") for tag in ("kernel", "initrd", "cmdline")] == [
        spec.kernel_path,
        spec.initrd_path,
        spec.cmdline,
    ]
    assert domain.find("features/acpi") is not None
    assert domain.find("cpu").get("mode") == "maximum"
    assert [domain.findtext(event) for event in ("on_poweroff", "on_reboot", "on_crash")] == ["destroy"] * 3
    (disk,) = domain.findall("devices/disk")
    assert disk.get("device") == "disk" and disk.find("driver").get("type") == "raw"
    assert disk.find("source").get("file") == spec.disk_path
    assert (disk.find("target").get("dev"), disk.find("target").get("bus")) == ("vda", "virtio")
    interface = domain.find("devices/interface")
    assert interface.get("type") == "user" and interface.find("model").get("type") == "virtio"
    serial = domain.find("devices/serial")
    assert serial.get("type") == "file" and serial.find("source").get("path") == spec.console_log
    assert domain.find("devices/console/target").get("type") == "serial"
    assert domain.find("devices/graphics") is None and domain.find("devices/video") is None


def test_domain_xml_cdrom_when_an_iso_is_given(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, iso="/srv/isos/Fedora-38.iso")
    domain = etree.fromstring(domain_xml(spec, "kvm"))
    assert domain.get("type") == "kvm" and domain.find("cpu").get("mode") == "host-passthrough"
    (cdrom,) = domain.xpath("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == "/srv/isos/Fedora-38.iso"
    assert cdrom.find("target").get("bus") == "sata" and cdrom.find("readonly") is not None


def test_domain_xml_carries_markup_in_values_as_text(tmp_path: Path) -> None:
    """A command line or path with XML markup stays a value: the document's shape does not change."""
    sneaky = "ks=file:/ks.cfg'/><devices><graphics type='vnc'/></devices><x a='&amp;"
    spec = make_spec(tmp_path, cmdline=sneaky)
    domain = etree.fromstring(domain_xml(spec, "qemu"))
    assert domain.findtext("os/cmdline") == sneaky
    assert domain.find("devices/graphics") is None and len(domain.findall("devices")) == 1


# --- config -----------------------------------------------------------------------------------------------------


def test_libvirt_options_defaults_and_checks() -> None:
    """The libvirt options have the contract's defaults; a domain type other than kvm/qemu is refused."""
    config = merge_config({}, {})
    assert (
        config.libvirt_uri,
        config.libvirt_domain_type,
        config.install_inactivity_timeout,
        config.install_timeout,
        config.install_memory_mib,
    ) == ("qemu:///system", "kvm", 300.0, 3600.0, 2048)
    assert merge_config({"libvirt_domain_type": "qemu"}, {"install_timeout": "60"}).install_timeout == 60.0
    with pytest.raises(ConfigError, match="'libvirt_domain_type' must be one of kvm, qemu"):
        merge_config({"libvirt_domain_type": "xen"}, {})


# --- libvirt's test driver, through the real LibvirtConnection ---------------------------------------------------
