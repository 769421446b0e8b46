"""The PostgreSQL server the store tests use: one fresh database per test, dropped after it.

The server is the one ``scripts/setup.sh --test`` installs and starts: 127.0.0.1:5432, user
``postgres``, trust authentication (``IMAGEFACTORY_TEST_POSTGRES_URL`` names another).  Nothing
is skipped: when the server is not up, the test fails and says so.  The fixture is
``postgres_url`` (tests/conftest.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

#: The server's maintenance database, where the test databases are created and dropped.
SERVER_URL = os.environ.get("IMAGEFACTORY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

#: The prefix of every test database's name (a crashed run's leftovers are recognisable).
PREFIX = "imgfac_test_"


def database_url(name: str, server_url: str = SERVER_URL) -> str:
    """``server_url`` naming the database ``name`` instead."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def admin_connection(server_url: str = SERVER_URL) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the server's maintenance database; fails the test when the server is down."""
    try:
        return psycopg.connect(server_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        where = urlsplit(server_url).hostname, urlsplit(server_url).port or 5432
        pytest.fail(
            f"PostgreSQL is not reachable at {where[0]}:{where[1]} ({error}); "
            "scripts/setup.sh --test installs and starts it",
            pytrace=False,
        )


@contextmanager
def fresh_database(server_url: str = SERVER_URL) -> Iterator[str]:
    """Create an empty database, yield its URL, and drop it afterwards (its connections closed by force)."""
    name = PREFIX + uuid.uuid4().hex[:16]
    with admin_connection(server_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name, server_url)
    finally:
        with admin_connection(server_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def role_with_password(password: str, server_url: str = SERVER_URL) -> Iterator[str]:
    """A login role with ``password`` (for the tests that check it is never shown); yield its name, drop it after.

    Trust authentication admits it without the password: what the tests check is where the password goes.
    """
    name = PREFIX + "role_" + uuid.uuid4().hex[:12]
    with admin_connection(server_url) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
    try:
        yield name
    finally:
        with admin_connection(server_url) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
