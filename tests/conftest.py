"""Shared fixtures: a fresh PostgreSQL database per test, and the CDC sink on each database.

PostgreSQL is expected at 127.0.0.1:5432 with trust auth for `postgres`. Tests that need it
skip when it is unreachable, unless STRANGLER_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from cdc import mapping
from cdc.sink import SqlSink, create_engine
from new_services.search import manage as search

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An AUTOCOMMIT engine on the server's `postgres` database, for CREATE/DROP DATABASE."""
    engine = sa.create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except OperationalError as exc:
        reason = f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {exc.orig}"
        if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = f"strangler_test_{uuid.uuid4().hex[:16]}"
    with pg_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as connection:
        # FORCE: a test that failed mid-way may leave a connection open.
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def search_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The search service's database, migrated: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'search.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    search.migrate(url)
    return url


@pytest.fixture
def sink(search_database_url: str) -> Iterator[SqlSink]:
    """The CDC sink on the search database (the contract suite's adapter, both databases)."""
    engine = create_engine(search_database_url)
    target = SqlSink(engine, mapping.load())
    target.open()
    yield target
    engine.dispose()
