"""Fixtures and hooks for both tiers.

The tiers are folders: ``tests/unit/`` (fakes, a ``Clock``, StubTreq, inline
doors: no socket, no process, no sleeping) and ``tests/integration/`` (real
peers).  Every test under ``tests/integration/`` is marked ``integration`` here,
so ``-m integration`` and ``-m "not integration"`` select the tiers too.

Fixtures:

* ``stack``: the daemon's core wired on fakes (``imgfac_twisted.testing.Stack``),
  closed when the test ends; a module changes its settings by overriding
  ``stack_settings``.

* ``operator_chain``: an operator's PEM bundle (root CA -> intermediate -> leaf)
  for the TLS tests of both tiers.
* ``document``: the factory API's OpenAPI document, read by both tiers.
* ``postgres_url``: the URL of a fresh, empty PostgreSQL database on 127.0.0.1:5432, dropped
  after the test (tests/support/postgres.py); the test fails when the server is not up.
* ``store_factory``: parametrized over SQLite and PostgreSQL (the store contract): call it to
  open one more store instance on the test's one database; all are closed after the test.

The integration tier's own fixtures (the daemon, moto, RabbitMQ) are in
tests/integration/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imgfac_twisted.testing import Stack
from support.openapi_document import load_document
from support.pem_material import operator_chain as make_operator_chain
from support.postgres import fresh_database

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
def operator_chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | object]:
    """An "--ssl_pem" bundle: root CA -> intermediate -> leaf (see support.pem_material.operator_chain)."""
    return make_operator_chain(tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The factory API's OpenAPI document as installed (what the daemon serves); a module may override it."""
    return load_document()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database's URL (user postgres, trust), dropped after the test."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Open another store (SQLiteStore, then PostgresStore) on the test's one database: a second node."""
    from imgfac_twisted.store.postgres import PostgresStore
    from imgfac_twisted.store.sqlite import SQLiteStore
    from imgfac_twisted.testing import InlineDoor

    made: list[Any] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    path = str(tmp_path / "store.sqlite")

    def opened() -> Any:
        instance = PostgresStore(url, InlineDoor()) if url else SQLiteStore(path, InlineDoor())
        instance.thd_open()
        made.append(instance)
        return instance

    yield opened
    for instance in made:
        instance.thd_close()
