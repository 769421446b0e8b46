"""Fixtures of the integration tier (every test here is marked ``integration`` by tests/conftest.py).

Daemon fixtures (see tests/support/daemon.py):

* ``daemon``: one TLS + OAuth daemon per test module (mock builds take 0.5 s),
  always stopped at the end of the module.
* ``daemon_factory``: make daemons with custom config/arguments for one test;
  each is stopped (SIGTERM) when the test ends.
* ``module_daemon_factory``: the same, shared by a module.

When a test fails, the logs of the daemons it used are added to its report.

Peers:

* ``moto``: a ``moto_server`` on a free loopback port, one per test module.
* ``rabbitmq_url``: a reachable RabbitMQ broker, started here if it is local and down.
* ``openstack``: a real Keystone and Glance on loopback, one per session (installed once, see
  support.openstack_peer).
* ``vcsim``: VMware's vCenter simulator on loopback behind a proxy that hashes disk uploads, one per
  session (built once, see support.vcsim_peer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

import pytest

from imgfac_twisted.events.amqp import parse_amqp_url
from support.daemon import Daemon, DaemonPool
from support.moto_peer import MotoServer
from support.openstack_peer import OpenStackPeer
from support.rabbitmq import BROKER_URL, port_open, start_local_broker
from support.vcsim_peer import VcsimPeer


class Peer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


P = TypeVar("P", bound=Peer)


def running(peer: P) -> Iterator[P]:
    """Start ``peer``, hand it over, stop it at the end (a half-started one too)."""
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of a reachable RabbitMQ broker (started here if it is local and down)."""
    address = parse_amqp_url(BROKER_URL)
    if not port_open(address.host, address.port):
        why_not = start_local_broker(address.host, address.port)
        if why_not is not None:
            pytest.skip(f"no RabbitMQ broker at {address.host}:{address.port} and {why_not}")
    return BROKER_URL


@pytest.fixture(scope="session")
def openstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenStackPeer]:
    """Keystone and Glance 33 under gunicorn on loopback, with a test project, user and application credential."""
    yield from running(OpenStackPeer(tmp_path_factory.mktemp("openstack")))


@pytest.fixture(scope="session")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimPeer]:
    """vcsim (TLS, one user) and the proxy in front of it that hashes the disks uploaded to /nfc/."""
    yield from running(VcsimPeer(tmp_path_factory.mktemp("vcsim")))


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonPool]:
    """Daemons shared by the tests of one module; stopped after its last test."""
    pool = DaemonPool(tmp_path_factory.mktemp("daemons"))
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="module")
def daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """A started daemon with TLS and OAuth on (clients client1/our-secret and 'weird key/é'/s2)."""
    return module_daemon_factory.make(name="shared")


@pytest.fixture
def daemon_factory(tmp_path: Any) -> Iterator[DaemonPool]:
    """Call it (``daemon_factory(config, extra_args=[...], ssl=False, start=True)``) to get a daemon for this test."""
    pool = DaemonPool(tmp_path / "daemons")
    try:
        yield pool
    finally:
        pool.stop_all()


def _daemons_of(item: pytest.Item) -> list[Daemon]:
    """The daemons a test used, directly or through a pool, each once."""
    found: list[Daemon] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Daemon):
            found.append(value)
        elif isinstance(value, DaemonPool):
            found.extend(value.daemons)
    unique: list[Daemon] = []
    for daemon in found:
        if all(daemon is not seen for seen in unique):
            unique.append(daemon)
    return unique


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for daemon in _daemons_of(item):
            report.sections.append((f"daemon log ({daemon.workdir.name}, port {daemon.port})", daemon.diagnostics(80)))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real ``moto_server`` (the AWS wire protocol) on 127.0.0.1, stopped after the module's last test."""
    server = MotoServer(tmp_path_factory.mktemp("moto"), "moto")
    try:
        yield server
    finally:
        server.stop()
