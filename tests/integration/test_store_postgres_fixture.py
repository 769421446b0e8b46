"""The ``postgres_url`` fixture: an empty database of its own for each test, dropped after it."""

from __future__ import annotations

import psycopg
import pytest

from support.postgres import PREFIX, admin_connection


def test_fresh_database_is_empty_and_own(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        name = connection.execute("SELECT current_database()").fetchone()
        tables = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert name is not None and name[0].startswith(PREFIX)
    assert tables == (0,)


def test_database_is_dropped_after_the_test() -> None:
    from support.postgres import fresh_database

    with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
    with admin_connection() as admin:
        left = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()
    assert left == (0,)


def test_a_server_that_is_down_fails_the_test_with_a_clear_message() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"(?s)PostgreSQL is not reachable at 127\.0\.0\.1:1 .*setup\.sh"):
        admin_connection("postgresql://postgres@127.0.0.1:1/postgres")
