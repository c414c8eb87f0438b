"""Each service's Alembic history: on SQLite and PostgreSQL, idempotent, safe when concurrent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from legacy_monolith import manage as monolith
from legacy_monolith.models import Base as MonolithBase
from new_services.search import manage as search
from new_services.search.models import Base as SearchBase

REPLICAS = 4


@dataclass(frozen=True)
class Service:
    module: str
    migrate: Callable[[str], str]
    metadata: sa.MetaData
    version_table: str
    head: str


SERVICES = {
    "monolith": Service(
        "legacy_monolith.manage",
        monolith.migrate,
        MonolithBase.metadata,
        "legacy_alembic_version",
        "0001",
    ),
    "search": Service(
        "new_services.search.manage",
        search.migrate,
        SearchBase.metadata,
        "search_alembic_version",
        "0003",  # 0002: the CDC bridge's positions and joined categories (issue 5); 0003: its
        # tombstones (issue 17)
    ),
}


@pytest.fixture(params=list(SERVICES))
def service(request: pytest.FixtureRequest) -> Service:
    return SERVICES[request.param]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def versions(url: str, table: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        version = sa.column("version_num", sa.String)
        rows = connection.scalars(sa.select(version).select_from(sa.table(table))).all()
    engine.dispose()
    return list(rows)


def schema_drift(url: str, metadata: sa.MetaData) -> list[object]:
    """What autogenerate would change: nothing, if models and migrations agree."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    return [change for change in diff if not _is_version_table(change)]


def _is_version_table(change: object) -> bool:
    return (
        isinstance(change, tuple)
        and change[0] == "remove_table"
        and "alembic_version" in change[1].name
    )


def test_migrate_reaches_head_and_matches_the_models(service: Service, database_url: str) -> None:
    assert service.migrate(database_url) == service.head
    assert versions(database_url, service.version_table) == [service.head]
    assert schema_drift(database_url, service.metadata) == []


def test_migrating_twice_changes_nothing(service: Service, database_url: str) -> None:
    service.migrate(database_url)
    engine = sa.create_engine(database_url)
    before = sorted(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert service.migrate(database_url) == service.head
    engine = sa.create_engine(database_url)
    assert sorted(sa.inspect(engine).get_table_names()) == before
    engine.dispose()
    assert versions(database_url, service.version_table) == [service.head]


def test_both_services_can_share_one_database(pg_url: str) -> None:
    monolith.migrate(pg_url)
    search.migrate(pg_url)
    engine = sa.create_engine(pg_url)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {
        "products",
        "search_documents",
        "legacy_alembic_version",
        "search_alembic_version",
    } <= tables
    for service in SERVICES.values():
        assert versions(pg_url, service.version_table) == [service.head]


# Each replica imports everything first, says it is ready, then waits for the go file, so
# the migrations themselves start together rather than staggered by import time.
REPLICA = """
import pathlib, sys, time
from {module} import migrate
print("ready", flush=True)
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
print(migrate(sys.argv[1]), flush=True)
"""


def test_concurrent_replicas_migrate_once(service: Service, pg_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA.format(module=service.module), pg_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(REPLICAS)
    ]
    for replica in replicas:
        assert replica.stdout is not None and replica.stdout.readline() == "ready\n"
    go.touch()
    results = [replica.communicate(timeout=60) for replica in replicas]
    assert [r.returncode for r in replicas] == [0] * REPLICAS, [err for _, err in results]
    assert [out for out, _ in results] == [f"{service.head}\n"] * REPLICAS
    assert versions(pg_url, service.version_table) == [service.head]
    assert schema_drift(pg_url, service.metadata) == []
