"""The blocking libvirt calls of an install, run on the connection's thread (``connection.run``).

Each takes the open ``virConnect`` first.  They define and start a domain,
observe it (state, disk writes, new console bytes) and tear it down.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any

from .console import CONSOLE_READ_LIMIT, ConsoleCursor, thd_read_console
from .domain import DISK_TARGET


class Condition(enum.Enum):
    RUNNING = "running"  # still installing (or paused, or shutting down)
    POWERED_OFF = "powered off"  # shut off by the guest itself: the installer finished
    CRASHED = "crashed"  # the guest or QEMU crashed
    BROKEN = "broken"  # stopped for another reason (destroyed from outside, disk error)


@dataclass(frozen=True)
class Observation:
    condition: Condition
    detail: str
    writes: tuple[int, int]  # the disk's (write requests, bytes written) so far
    console: bytes  # console bytes not seen before
    console_cursor: ConsoleCursor  # where the next read starts
    console_problem: str | None  # why the console log cannot be read


def thd_define_and_start(conn: Any, xml: str, disk_path: str) -> int:
    """Define the domain persistently (so that its shut-off reason stays readable) and start it; the disk's size."""
    domain = conn.defineXML(xml)
    domain.create()
    return os.path.getsize(disk_path)


def thd_observe(conn: Any, name: str, console_path: str, console_cursor: ConsoleCursor) -> Observation:
    import libvirt

    domain = conn.lookupByName(name)
    condition, detail = domain_condition(domain)
    writes = (0, 0)
    if condition is Condition.RUNNING:
        try:
            stats = domain.blockStats(DISK_TARGET)
            writes = (stats[2], stats[3])
        except libvirt.libvirtError:
            # It may have stopped between the two calls.
            condition, detail = domain_condition(domain)
            if condition is Condition.RUNNING:
                raise
    console, console_cursor, problem = thd_read_console(console_path, console_cursor)
    return Observation(condition, detail, writes, console, console_cursor, problem)


def domain_condition(domain: Any) -> tuple[Condition, str]:
    """What the domain's state says of the guest, and the words for it."""
    import libvirt

    state, reason = domain.state()
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        detail = f"shut off, reason: {SHUTOFF_REASONS.get(reason, reason)}"
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN:
            return Condition.POWERED_OFF, detail
        if reason in (libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED):
            return Condition.CRASHED, detail
        return Condition.BROKEN, detail
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return Condition.CRASHED, "crashed"
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
        # QEMU pauses a guest whose disk writes fail, e.g. on a full host disk.
        return Condition.BROKEN, "paused after a disk I/O error; is the host's disk full?"
    return Condition.RUNNING, "running"


SHUTOFF_REASONS = {
    0: "unknown",
    1: "shutdown",
    2: "destroyed",
    3: "crashed",
    4: "migrated",
    5: "saved",
    6: "failed",
    7: "from snapshot",
    8: "daemon",
}


def thd_tear_down(conn: Any, name: str, console_path: str, console_cursor: ConsoleCursor) -> bytes:
    """Destroy and undefine the domain if it exists; the console bytes not read yet."""
    import libvirt

    try:
        domain = conn.lookupByName(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    else:
        thd_remove(domain)
    rest = []
    while True:
        data, console_cursor, _ = thd_read_console(console_path, console_cursor)
        rest.append(data)
        if len(data) < CONSOLE_READ_LIMIT or sum(map(len, rest)) >= 4 * CONSOLE_READ_LIMIT:
            return b"".join(rest)


def thd_remove(domain: Any) -> None:
    """Destroy the domain if it runs, and undefine it if it is defined."""
    import libvirt

    if domain.isActive():
        try:
            domain.destroy()
        except libvirt.libvirtError as error:
            # It may have shut off on its own in the meantime.
            if error.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
    if domain.isPersistent():
        domain.undefine()
