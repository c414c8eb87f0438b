"""Shadow results: every comparison recorded, summarised per route. A port and its adapters.

`create_store(url)` picks the adapter by URL: `sqlite:///path.db` (the embedded default) or
`postgresql+psycopg://...`. Both are one SQLAlchemy Core implementation on a sync engine,
called through `asyncio.to_thread`: the gateway writes in batches (one transaction each) and
reads only for a report, so a thread hop per batch costs nothing that matters, and no async
driver (aiosqlite, greenlet) is needed. The schema is the store's own and is created on first
use (`metadata.create_all`, under an advisory lock on PostgreSQL so replicas may race), and a
table made by an earlier version is upgraded there too (`_upgrade`, under the same lock).

Tables: `shadow_comparisons`, one row per compared request (or candidate failure),
`shadow_differences`, one row per difference (noisy ones flagged), carrying the comparison's
route and time so the summary is a few GROUP BY queries on either database, with no JSON
functions, and `shadow_drops`, how many copies a route dropped for each reason in each batch
(`gateway.shadow.mirror.DROP_REASONS`; "unknown" for the tallies stored before reasons were): a
dropped copy happens when the shadow side or the gateway is overloaded, the one moment a row
per copy would cost the most, so drops are tallied, not recorded one by one.

Sensitive headers are never stored (`redact` runs on every record); configured JSON paths are
redacted by the caller with `redact(record, paths)` before recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from gateway.config.compare import JsonPath, Wildcard, parse_path
from gateway.shadow.differ import Difference, generalise, render

Recorded = Literal["identical", "different", "status_only", "noise_only", "candidate_error"]
COMPARED: tuple[Recorded, ...] = ("identical", "different", "status_only", "noise_only")
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
REDACTED = "[redacted]"
ERROR_CHARS = 500
_Size = TypeVar("_Size", int, sa.ColumnElement[int])
_SCHEMA_LOCK = 0x5A4D_0004  # pg_advisory_xact_lock key: "shadow schema", issue 4
UNKNOWN_REASON = "unknown"  # of the drops tallied before the store kept their reasons


@dataclass(frozen=True, slots=True)
class Record:
    at: float  # epoch seconds, from the gateway's clock
    route: str
    method: str
    path: str  # normalised request path
    primary_status: int
    candidate_status: int | None  # None when the candidate failed or was not asked
    verdict: Recorded
    differences: Sequence[Difference] = ()  # Comparison.differences
    noisy: Sequence[Difference] = ()  # Comparison.noisy: on learned noisy paths
    primary_ms: float = 0.0
    candidate_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FieldCount:
    path: str  # generalised: $.results[*].price
    kind: str
    count: int  # comparisons with this difference
    example: Difference  # the latest one recorded


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None  # nearest-rank percentiles, milliseconds; None without samples
    p99: float | None


@dataclass(frozen=True, slots=True)
class RouteSummary:
    route: str
    mirrored: int  # compared + candidate_errors + dropped
    compared: int  # identical + different + noise_only + status_only
    identical: int
    different: int
    noise_only: int
    status_only: int
    candidate_errors: int
    drops: Mapping[str, int]  # reason -> copies dropped, the reasons with any
    top_differences: tuple[FieldCount, ...]
    top_noisy: tuple[FieldCount, ...]
    primary_ms: Latency
    candidate_ms: Latency

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.compared if self.compared else 0.0

    @property
    def differing_pct(self) -> float:
        return 100.0 * self.different / self.compared if self.compared else 0.0


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


# --- redaction (pure) ----------------------------------------------------------------------


def redact(
    record: Record, paths: Sequence[str] = (), headers: frozenset[str] = SENSITIVE_HEADERS
) -> Record:
    """The record with sensitive header values and the values at `paths` (and inside
    values that contain them) replaced by "[redacted]"."""
    patterns = [parse_path(p) for p in paths]
    if not record.differences and not record.noisy:  # most records: nothing to redact
        return record
    return replace(
        record,
        differences=tuple(_redact(d, patterns, headers) for d in record.differences),
        noisy=tuple(_redact(d, patterns, headers) for d in record.noisy),
    )


def _redact(d: Difference, patterns: list[JsonPath], headers: frozenset[str]) -> Difference:
    if d.path.startswith("headers."):
        return _blank(d) if d.path.removeprefix("headers.") in headers else d
    if not patterns or not d.path.startswith("$"):
        return d
    steps = parse_path(d.path)
    if any(len(p) <= len(steps) and _matches(p, steps) for p in patterns):
        return _blank(d)
    below = [p[len(steps) :] for p in patterns if len(p) > len(steps) and _matches(p, steps)]
    if not below:
        return d
    return replace(
        d, primary=_mask_text(d.primary, below), candidate=_mask_text(d.candidate, below)
    )


def _matches(pattern: JsonPath, steps: JsonPath) -> bool:
    return all(p is Wildcard.ANY or p == s for p, s in zip(pattern, steps, strict=False))


def _blank(d: Difference) -> Difference:
    return replace(
        d,
        primary=None if d.primary is None else REDACTED,
        candidate=None if d.candidate is None else REDACTED,
    )


def _mask_text(text: str | None, patterns: list[JsonPath]) -> str | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:  # cut short when rendered: nothing in it can be shown safely
        return REDACTED
    masked = _mask(value, patterns)
    return text if masked == value else render(masked)


def _mask(value: object, patterns: list[JsonPath]) -> object:
    if () in patterns:
        return REDACTED
    if isinstance(value, dict):
        return {k: _mask(v, _descend(patterns, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, _descend(patterns, i)) for i, v in enumerate(value)]
    return value


def _descend(patterns: list[JsonPath], step: str | int) -> list[JsonPath]:
    return [p[1:] for p in patterns if p[0] is Wildcard.ANY or p[0] == step]


# --- the SQL adapter -----------------------------------------------------------------------

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY
metadata = sa.MetaData()
comparisons = sa.Table(
    "shadow_comparisons",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("primary_status", sa.Integer, nullable=False),
    sa.Column("candidate_status", sa.Integer),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("primary_ms", sa.Double, nullable=False),
    sa.Column("candidate_ms", sa.Double),
    sa.Column("error", sa.Text),
    sa.Index("ix_shadow_comparisons_route_at", "route", "at"),
    sa.Index("ix_shadow_comparisons_at", "at"),
)
differences = sa.Table(
    "shadow_differences",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("comparison_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("noisy", sa.Boolean, nullable=False),
    sa.Column("field", sa.Text, nullable=False),  # the path, generalised
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("primary_value", sa.Text),
    sa.Column("candidate_value", sa.Text),
    sa.Index("ix_shadow_differences_route_at", "route", "at"),
)
drops = sa.Table(
    "shadow_drops",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    # The default is what `_upgrade` gives the rows of an older table; it also lets a replica
    # still on the older code insert into an upgraded table during a rolling update.
    sa.Column(
        "reason", sa.String(32), nullable=False, server_default=sa.text(f"'{UNKNOWN_REASON}'")
    ),
    sa.Index("ix_shadow_drops_route_at", "route", "at"),
)


class SqlShadowStore:
    """The `ShadowStore` on SQLite or PostgreSQL."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float], top: int) -> None:
        self.engine = engine
        self.clock = clock
        self.top = top
        self._created = False
        self._schema_lock = threading.Lock()
        # SQLite has one writer at a time: queue ours here rather than in its busy loop.
        self._write_lock: contextlib.AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    async def record(
        self, records: Sequence[Record], dropped: Mapping[tuple[str, str], int] | None = None
    ) -> None:
        tallies = {key: n for key, n in (dropped or {}).items() if n > 0}
        if records or tallies:
            await asyncio.to_thread(self._write, [redact(r) for r in records], tallies)

    async def summary(
        self, route: str | None = None, since: float | None = None
    ) -> list[RouteSummary]:
        return await asyncio.to_thread(self._summary, route, since)

    async def retain(self, max_rows: int, max_age: float) -> int:
        """Delete comparisons older than `max_age` seconds and all but the newest `max_rows`;
        return how many were deleted."""
        if max_rows < 0 or not max_age >= 0:
            raise ValueError("retention needs max_rows >= 0 and max_age >= 0")
        return await asyncio.to_thread(self._retain, max_rows, max_age)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    def _ready(self) -> None:
        if self._created:
            return
        with self._schema_lock:
            if self._created:
                return
            with self._write_lock, self.engine.begin() as connection:
                # The schema lock, held to the commit: other stores on the database (replicas;
                # the gateway and its shadow worker) wait, then find the schema made.
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                    )
                else:  # pysqlite runs DDL outside a transaction unless one is begun
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                metadata.create_all(connection)
                _upgrade(connection)
            self._created = True

    def _write(self, records: list[Record], tallies: dict[tuple[str, str], int]) -> None:
        self._ready()
        at = self.clock()
        counts = [
            {"at": at, "route": route, "reason": reason, "count": n}
            for (route, reason), n in tallies.items()
        ]
        rows = [
            {
                "at": r.at,
                "route": r.route,
                "method": r.method,
                "path": r.path,
                "primary_status": r.primary_status,
                "candidate_status": r.candidate_status,
                "verdict": r.verdict,
                "primary_ms": r.primary_ms,
                "candidate_ms": r.candidate_ms,
                "error": None if r.error is None else r.error[:ERROR_CHARS],
            }
            for r in records
        ]
        returning = sa.insert(comparisons).returning(comparisons.c.id, sort_by_parameter_order=True)
        with self._write_lock, self.engine.begin() as connection:
            if counts:
                connection.execute(sa.insert(drops), counts)
            details = []
            # Only comparisons with differences need their ids back (RETURNING costs several
            # times a plain executemany); runs keep the insertion order, which retention uses.
            for detailed, run in itertools.groupby(
                zip(records, rows, strict=True), key=lambda pair: bool(_details(pair[0]))
            ):
                pairs = list(run)
                if not detailed:
                    connection.execute(sa.insert(comparisons), [row for _, row in pairs])
                    continue
                ids = connection.execute(returning, [row for _, row in pairs]).scalars().all()
                details += [
                    {
                        "comparison_id": id_,
                        "at": r.at,
                        "route": r.route,
                        "noisy": noisy,
                        "field": generalise(d.path),
                        "path": d.path,
                        "kind": d.kind,
                        "primary_value": d.primary,
                        "candidate_value": d.candidate,
                    }
                    for id_, (r, _) in zip(ids, pairs, strict=True)
                    for noisy, d in _details(r)
                ]
            if details:
                connection.execute(sa.insert(differences), details)

    def _retain(self, max_rows: int, max_age: float) -> int:
        self._ready()
        c, d, t = comparisons.c, differences.c, drops.c
        oldest = self.clock() - max_age
        with self._write_lock, self.engine.begin() as connection:
            deleted = connection.execute(sa.delete(comparisons).where(c.at < oldest)).rowcount
            connection.execute(sa.delete(differences).where(d.at < oldest))
            connection.execute(sa.delete(drops).where(t.at < oldest))
            # Newest by insertion order: the gateway records in the order it compares.
            last_dropped = connection.execute(
                sa.select(c.id).order_by(c.id.desc()).offset(max_rows).limit(1)
            ).scalar()
            if last_dropped is not None:
                deleted += connection.execute(
                    sa.delete(comparisons).where(c.id <= last_dropped)
                ).rowcount
                connection.execute(sa.delete(differences).where(d.comparison_id <= last_dropped))
                # The drops tallied before the oldest kept comparison go with the rows.
                kept_since = connection.execute(sa.select(sa.func.min(c.at))).scalar()
                connection.execute(
                    sa.delete(drops)
                    if kept_since is None
                    else sa.delete(drops).where(t.at < kept_since)
                )
        return deleted

    def _summary(self, route: str | None, since: float | None) -> list[RouteSummary]:
        self._ready()
        c = comparisons.c
        with self.engine.connect() as connection:
            counts: dict[str, dict[str, int]] = {}
            query = (
                sa.select(c.route, c.verdict, sa.func.count())
                .where(*_where(comparisons, route, since))
                .group_by(c.route, c.verdict)
            )
            for name, verdict, count in connection.execute(query):
                counts.setdefault(name, {})[verdict] = count
            dropped: dict[str, dict[str, int]] = {}
            tallied = (
                sa.select(drops.c.route, drops.c.reason, sa.func.sum(drops.c.count))
                .where(*_where(drops, route, since))
                .group_by(drops.c.route, drops.c.reason)
                .order_by(drops.c.route, drops.c.reason)
            )
            for name, reason, count in connection.execute(tallied):
                dropped.setdefault(name, {})[reason] = int(count)
            fields = self._fields(connection, _where(differences, route, since))
            latencies = {
                column.name: self._percentiles(connection, column, route, since)
                for column in (c.primary_ms, c.candidate_ms)
            }
        summaries = []
        for name in sorted(counts.keys() | dropped.keys()):
            n = counts.get(name, {})
            by_reason = dropped.get(name, {})
            compared = sum(n.get(v, 0) for v in COMPARED)
            summaries.append(
                RouteSummary(
                    route=name,
                    mirrored=sum(n.values()) + sum(by_reason.values()),
                    compared=compared,
                    identical=n.get("identical", 0),
                    different=n.get("different", 0),
                    noise_only=n.get("noise_only", 0),
                    status_only=n.get("status_only", 0),
                    candidate_errors=n.get("candidate_error", 0),
                    drops=by_reason,
                    top_differences=fields.get((name, False), ()),
                    top_noisy=fields.get((name, True), ()),
                    primary_ms=latencies["primary_ms"].get(name, Latency(None, None)),
                    candidate_ms=latencies["candidate_ms"].get(name, Latency(None, None)),
                )
            )
        return summaries

    def _fields(
        self, connection: sa.Connection, where: list[sa.ColumnElement[bool]]
    ) -> dict[tuple[str, bool], tuple[FieldCount, ...]]:
        d = differences.c
        groups = connection.execute(
            sa.select(
                d.route,
                d.noisy,
                d.field,
                d.kind,
                sa.func.count(sa.distinct(d.comparison_id)),
                sa.func.max(d.id),
            )
            .where(*where)
            .group_by(d.route, d.noisy, d.field, d.kind)
        ).all()
        ranked: dict[tuple[str, bool], list[tuple[str, str, int, int]]] = {}
        for route, noisy, field, kind, count, example_id in groups:
            ranked.setdefault((route, bool(noisy)), []).append((field, kind, count, example_id))
        top = {
            key: sorted(rows, key=lambda row: (-row[2], row[0], row[1]))[: self.top]
            for key, rows in ranked.items()
        }
        wanted = [row[3] for rows in top.values() for row in rows]
        examples = {
            row.id: Difference(row.path, row.kind, row.primary_value, row.candidate_value)
            for row in connection.execute(
                sa.select(d.id, d.path, d.kind, d.primary_value, d.candidate_value).where(
                    d.id.in_(wanted)
                )
            )
        }
        return {
            key: tuple(FieldCount(f, k, n, examples[ex]) for f, k, n, ex in rows)
            for key, rows in top.items()
        }

    def _percentiles(
        self,
        connection: sa.Connection,
        column: sa.ColumnElement[float],
        route: str | None,
        since: float | None,
    ) -> dict[str, Latency]:
        c = comparisons.c
        rank = sa.func.row_number().over(partition_by=c.route, order_by=column).label("rank")
        size = sa.func.count().over(partition_by=c.route).label("size")
        inner = (
            sa.select(c.route, column.label("ms"), rank, size)
            .where(column.is_not(None), *_where(comparisons, route, since))
            .subquery()
        )
        query = sa.select(inner.c.route, inner.c.rank, inner.c.size, inner.c.ms).where(
            sa.or_(*(inner.c.rank == _rank(inner.c.size, p) for p in (50, 99)))
        )
        found: dict[str, dict[int, float]] = {}
        sizes: dict[str, int] = {}
        for name, rank_, size_, ms in connection.execute(query):
            found.setdefault(name, {})[rank_] = ms
            sizes[name] = size_
        return {
            name: Latency(found[name][_rank(sizes[name], 50)], found[name][_rank(sizes[name], 99)])
            for name in found
        }


def _upgrade(connection: sa.Connection) -> None:
    """Bring the tables an earlier version made up to this schema (under the schema lock)."""
    columns = {column["name"] for column in sa.inspect(connection).get_columns(drops.name)}
    reason = drops.c.reason
    if reason.name not in columns:  # made before drops kept their reasons
        connection.execute(
            sa.text(
                f"ALTER TABLE {drops.name} ADD COLUMN {reason.name}"
                f" {reason.type.compile(connection.dialect)} NOT NULL"
                f" DEFAULT '{UNKNOWN_REASON}'"
            )
        )


def _details(record: Record) -> list[tuple[bool, Difference]]:
    """The record's differences, each with whether it is on a noisy path."""
    return [(False, d) for d in record.differences] + [(True, d) for d in record.noisy]


def _where(table: sa.Table, route: str | None, since: float | None) -> list[sa.ColumnElement[bool]]:
    clauses = []
    if route is not None:
        clauses.append(table.c.route == route)
    if since is not None:
        clauses.append(table.c.at >= since)
    return clauses


def _rank(size: _Size, percent: int) -> _Size:
    """Nearest rank: the ceil(percent/100 * size)-th smallest value, in SQL or Python."""
    return (size * percent + 99) // 100
