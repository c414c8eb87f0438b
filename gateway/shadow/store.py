"""Shadow results: every comparison recorded, summarised per route. The port and its factory.

`create_store(url)` picks the adapter by URL: `sqlite:///path.db` (the embedded default) or
`postgresql+psycopg://...`; both are `gateway.shadow.sql_store.SqlShadowStore`. The schema is
the store's own and is created on first use (`metadata.create_all`, under an advisory lock on
PostgreSQL so replicas may race), and a table made by an earlier version is upgraded there too
(`gateway.shadow.schema`, under the same lock).

What is kept: a `Record` per compared request or candidate failure, and per batch how many
copies a route dropped for each reason: a dropped copy happens when the shadow side or the
gateway is overloaded, the one moment a row per copy would cost the most, so drops are
tallied, not recorded one by one (`gateway.shadow.records`).

Sensitive headers are never stored (`redact` runs on every record); configured JSON paths are
redacted by the caller with `redact(record, paths)` before recording
(`gateway.shadow.redaction`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from gateway.shadow.records import Record, RouteSummary
from gateway.shadow.sql_store import SqlShadowStore


class ShadowStore(Protocol):
    async def record(
        self, records: Sequence[Record], dropped: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        """Store `records` and, per (route, reason), how many copies were dropped since the
        last call."""

    async def summary(
        self, route: str | None = None, since: float | None = None
    ) -> list[RouteSummary]: ...

    async def retain(self, max_rows: int, max_age: float) -> int: ...

    async def close(self) -> None: ...


def create_store(
    url: str, *, clock: Callable[[], float] = time.time, top: int = 10
) -> SqlShadowStore:
    """The store for `url`; nothing is opened until first use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"shadow store URL {url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    elif backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _configure_sqlite)
    elif backend == "sqlite":  # one shared in-memory database, for tests and trials
        engine = sa.create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        raise ValueError(
            f"shadow store URL {url!r}: use sqlite:///path.db or postgresql+psycopg://..."
        )
    return SqlShadowStore(engine, clock=clock, top=top)


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: `strangler shadow report` reads while the gateway writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
