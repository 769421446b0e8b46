"""Fixtures and hooks for both tiers.

The tiers are folders: ``tests/unit/`` (fakes, a ``Clock``, StubTreq, inline
doors: no socket, no process, no sleeping) and ``tests/integration/`` (real
peers).  Every test under ``tests/integration/`` is marked ``integration`` here,
so ``-m integration`` and ``-m "not integration"`` select the tiers too.

Unit fixtures:

* ``stack``: the daemon's core wired on fakes (``imgfac_twisted.testing.Stack``),
  closed when the test ends; a module changes its settings by overriding
  ``stack_settings``.

Daemon fixtures (see tests/support/daemon.py):

* ``daemon``: one TLS + OAuth daemon per test module (mock builds take 0.5 s),
  always stopped at the end of the module.
* ``daemon_factory``: make daemons with custom config/arguments for one test;
  each is stopped (SIGTERM) when the test ends.
* ``module_daemon_factory``: the same, shared by a module.
* ``moto``: a ``moto_server`` on a free loopback port, one per test module.

When a test fails, the logs of the daemons it used are added to its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from support.daemon import Daemon, DaemonPool
from support.moto_peer import MotoServer
from support.openapi_document import load_document
from support.pem_material import operator_chain as make_operator_chain

from imgfac_twisted.testing import Stack

#: The folder whose tests are the integration tier.
INTEGRATION = Path(__file__).resolve().parent / "integration"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ ``integration``: the folder is the tier."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def stack_settings() -> dict[str, Any]:
    """Config settings of the ``stack`` fixture (``Config`` field names); override it in a module to change them."""
    return {}


@pytest.fixture
def stack(tmp_path: Path, stack_settings: dict[str, Any]) -> Iterator[Stack]:
    """The daemon's core on fakes (SQLite file, inline doors, a Clock), closed after the test."""
    instance = Stack(str(tmp_path), **stack_settings)
    try:
        yield instance
    finally:
        instance.close()


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
            report.sections.append((f"daemon log ({daemon.workdir.name}, port {daemon.port})",
                                    daemon.diagnostics(80)))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real ``moto_server`` (the AWS wire protocol) on 127.0.0.1, stopped after the module's last test."""
    server = MotoServer(tmp_path_factory.mktemp("moto"), "moto")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator_chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | object]:
    """An "--ssl_pem" bundle: root CA -> intermediate -> leaf (see support.pem_material.operator_chain)."""
    return make_operator_chain(tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The factory API's OpenAPI document as installed (what the daemon serves); a module may override it."""
    return load_document()
