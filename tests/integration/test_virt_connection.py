"""LibvirtConnection and the install watcher against libvirt's built-in test driver (test:///default): the
real libvirt library on its connection thread, under the real reactor (the watcher on fakes:
tests/unit/test_virt_unit.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import libvirt
import pytest
import pytest_twisted
from twisted.logger import LogLevel, globalLogPublisher

from imgfac_twisted.virt import calls
from imgfac_twisted.virt.connection import LibvirtConnection
from imgfac_twisted.virt.console import ConsoleCursor
from imgfac_twisted.virt.leftovers import LeftoverDomainsSweep, remove_leftover_domains
from imgfac_twisted.virt.spec import DOMAIN_PREFIX

TEST_DOMAIN = """<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type>hvm</type></os><devices><disk type='file' device='disk'><source file='{disk}'/>
<target dev='vda' bus='virtio'/></disk></devices></domain>"""


@pytest_twisted.async_yield_fixture
async def test_driver() -> Any:
    """A started LibvirtConnection to libvirt's built-in test driver (no daemon), stopped afterwards."""
    from twisted.internet import reactor

    connection = LibvirtConnection(reactor, "test:///default")
    connection.startService()
    yield connection
    await connection.stopService()


@pytest_twisted.ensureDeferred
async def test_connection_runs_calls_on_one_thread_and_reopens(test_driver: LibvirtConnection) -> None:
    """Calls run off the reactor thread, all on the same one; a closed connection is opened again."""
    import threading

    first = await test_driver.run(lambda conn: (conn.getURI(), threading.get_ident()))
    assert first[0] == "test:///default" and first[1] != threading.get_ident()
    await test_driver.run(lambda conn: conn.close())
    second = await test_driver.run(lambda conn: (conn.getURI(), threading.get_ident()))
    assert second == first


@pytest_twisted.ensureDeferred
async def test_stopped_connection_refuses_calls() -> None:
    """Stopping lets a queued call finish first; a call after the stop fails instead of hanging."""
    from twisted.internet import reactor

    connection = LibvirtConnection(reactor, "test:///default")
    connection.startService()
    queued = connection.run(lambda conn: conn.getURI())
    await connection.stopService()
    assert await queued == "test:///default"
    with pytest.raises(RuntimeError, match="is stopped"):
        await connection.run(lambda conn: conn.getURI())


@pytest_twisted.ensureDeferred
async def test_connection_passes_libvirt_errors(test_driver: LibvirtConnection) -> None:
    """A libvirt error reaches the caller as libvirtError with libvirt's message."""
    with pytest.raises(libvirt.libvirtError, match="Domain not found"):
        await test_driver.run(lambda conn: conn.lookupByName("imgfac-not-there"))


@pytest_twisted.ensureDeferred
async def test_watcher_calls_on_the_test_driver(test_driver: LibvirtConnection, tmp_path: Path) -> None:
    """The watcher's thread functions define, start, observe, see a power-off, and tear down on real libvirt."""
    name = DOMAIN_PREFIX + "unit-watch"
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 4096)
    console = tmp_path / "console.log"
    console.write_bytes(b"hello\n")
    xml = TEST_DOMAIN.format(name=name, disk=disk)
    try:
        assert await test_driver.run(calls.thd_define_and_start, xml, str(disk)) == 4096
        seen = await test_driver.run(calls.thd_observe, name, str(console), ConsoleCursor())
        assert seen.condition is calls.Condition.RUNNING and seen.console == b"hello\n"
        await test_driver.run(lambda conn: conn.lookupByName(name).shutdown())
        seen = await test_driver.run(calls.thd_observe, name, str(console), seen.console_cursor)
        assert seen.condition is calls.Condition.POWERED_OFF and seen.console == b""
    finally:
        await test_driver.run(calls.thd_tear_down, name, str(console), ConsoleCursor())
    names = await test_driver.run(lambda conn: [domain.name() for domain in conn.listAllDomains(0)])
    assert name not in names


@pytest_twisted.ensureDeferred
async def test_remove_leftover_domains(test_driver: LibvirtConnection, tmp_path: Path) -> None:
    """Only prefixed domains go; with ``under``, only those whose files lie in that directory."""
    mine, other_daemon = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other_daemon.mkdir()
    domains = {DOMAIN_PREFIX + "leftover-mine": mine, DOMAIN_PREFIX + "leftover-other": other_daemon, "not-ours": mine}

    def define_all(conn: Any) -> None:
        for name, folder in domains.items():
            conn.defineXML(TEST_DOMAIN.format(name=name, disk=folder / "disk.raw")).create()

    await test_driver.run(define_all)
    try:
        assert await remove_leftover_domains(test_driver, under=str(mine)) == [DOMAIN_PREFIX + "leftover-mine"]
        assert await remove_leftover_domains(test_driver) == [DOMAIN_PREFIX + "leftover-other"]
        names = await test_driver.run(lambda conn: [domain.name() for domain in conn.listAllDomains(0)])
        assert "not-ours" in names and not [name for name in names if name.startswith(DOMAIN_PREFIX)]
    finally:
        await test_driver.run(calls.thd_tear_down, "not-ours", os.devnull, ConsoleCursor())


@pytest_twisted.ensureDeferred
async def test_sweep_at_start_tolerates_an_unreachable_libvirt(tmp_path: Path) -> None:
    """The start-up sweep logs one warning naming the URI when libvirt cannot be reached, and raises nothing."""
    from twisted.internet import reactor

    warnings: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            warnings.append(event)

    connection = LibvirtConnection(reactor, f"qemu+unix:///system?socket={tmp_path}/no-libvirt-sock")
    connection.startService()
    sweep = LeftoverDomainsSweep(connection, str(tmp_path))
    globalLogPublisher.addObserver(observe)
    try:
        sweep.startService()
        await sweep.stopService()
    finally:
        globalLogPublisher.removeObserver(observe)
        await connection.stopService()
    assert len(warnings) == 1 and warnings[0]["uri"].endswith("no-libvirt-sock")
    assert "Failed to connect socket" in warnings[0]["error"]
