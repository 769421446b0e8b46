"""What the virt layer is asked to run: the domain to boot and how to tell its end.

Plain data, shared by the domain XML (``domain``), the watcher (``install``)
and the boot test (``boot``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ImageFactoryError

#: Every domain the factory defines is named with this prefix (then the build id).
DOMAIN_PREFIX = "imgfac-"


@dataclass(frozen=True)
class InstallSpec:
    """What to boot: the installer's kernel, initrd and command line, and the disk it installs onto."""

    name: str  # libvirt domain name; always DOMAIN_PREFIX + build id
    disk_path: str  # raw disk file; created by the caller, full size, sparse
    kernel_path: str | None  # installer kernel, booted directly; None: the disk boots itself (firmware)
    initrd_path: str | None  # installer initrd (with the kickstart/preseed already appended)
    cmdline: str | None  # kernel command line; the caller puts console=ttyS0 last
    console_log: str  # file the guest's serial console is written to
    iso_path: str | None = None  # attached as a CD-ROM when given
    memory_mib: int = 2048
    vcpus: int = 1
    disk_format: str = "raw"  # the disk file's format as QEMU reads it (a boot test's overlay: qcow2)


@dataclass(frozen=True)
class Verdict:
    """What a console line says of a watched guest: it got where it should (``done``), or failed, and why."""

    done: bool
    reason: str = ""


@dataclass(frozen=True)
class WatchRules:
    """How a watch tells a guest's end: an install ends when the guest powers off; a boot test when
    the console shows a login prompt (powering off first is then a failure)."""

    #: What is watched, as the reasons name it.
    activity: str = "install"
    #: Judges each console line (and the unterminated last one); None: lines say nothing.
    judge: Callable[[str], Verdict | None] | None = None
    #: The reason a guest that powers off (or resets) fails for; None: powering off is the end.
    power_off_failure: str | None = None
    #: Seconds the disk may go unwritten before the watch fails; None: no limit.
    inactivity_timeout: float | None = None


class InstallFailed(ImageFactoryError):
    """The install did not finish; str() is the reason, ending with the console's last lines."""
