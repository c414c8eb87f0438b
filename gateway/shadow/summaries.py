"""The per-route summary of the shadow store: a few GROUP BY queries on either database, the
latency percentiles by window functions, the top differing fields with their latest example."""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa

from gateway.shadow.differ import Difference
from gateway.shadow.records import COMPARED, FieldCount, Latency, RouteSummary
from gateway.shadow.schema import comparisons, differences, drops

_Size = TypeVar("_Size", int, sa.ColumnElement[int])
_NO_LATENCY = Latency(None, None)


def summarise(
    connection: sa.Connection, route: str | None, since: float | None, top: int
) -> list[RouteSummary]:
    """One summary per route with comparisons or drops (only `route`, from `since` on when
    given), each with at most `top` differing and noisy fields."""
    c = comparisons.c
    counts = _verdicts(connection, route, since)
    dropped = _drops(connection, route, since)
    fields = _fields(connection, _where(differences, route, since), top)
    latencies = {
        column.name: _percentiles(connection, column, route, since)
        for column in (c.primary_ms, c.candidate_ms)
    }
    summaries = []
    for name in sorted(counts.keys() | dropped.keys()):
        n = counts.get(name, {})
        by_reason = dropped.get(name, {})
        summaries.append(
            RouteSummary(
                route=name,
                mirrored=sum(n.values()) + sum(by_reason.values()),
                compared=sum(n.get(v, 0) for v in COMPARED),
                identical=n.get("identical", 0),
                different=n.get("different", 0),
                noise_only=n.get("noise_only", 0),
                status_only=n.get("status_only", 0),
                candidate_errors=n.get("candidate_error", 0),
                drops=by_reason,
                top_differences=fields.get((name, False), ()),
                top_noisy=fields.get((name, True), ()),
                primary_ms=latencies["primary_ms"].get(name, _NO_LATENCY),
                candidate_ms=latencies["candidate_ms"].get(name, _NO_LATENCY),
            )
        )
    return summaries


def _verdicts(
    connection: sa.Connection, route: str | None, since: float | None
) -> dict[str, dict[str, int]]:
    """route -> verdict -> comparisons."""
    c = comparisons.c
    counts: dict[str, dict[str, int]] = {}
    query = (
        sa.select(c.route, c.verdict, sa.func.count())
        .where(*_where(comparisons, route, since))
        .group_by(c.route, c.verdict)
    )
    for name, verdict, count in connection.execute(query):
        counts.setdefault(name, {})[verdict] = count
    return counts


def _drops(
    connection: sa.Connection, route: str | None, since: float | None
) -> dict[str, dict[str, int]]:
    """route -> reason -> copies dropped, the reasons in order."""
    t = drops.c
    dropped: dict[str, dict[str, int]] = {}
    tallied = (
        sa.select(t.route, t.reason, sa.func.sum(t.count))
        .where(*_where(drops, route, since))
        .group_by(t.route, t.reason)
        .order_by(t.route, t.reason)
    )
    for name, reason, count in connection.execute(tallied):
        dropped.setdefault(name, {})[reason] = int(count)
    return dropped


def _fields(
    connection: sa.Connection, where: list[sa.ColumnElement[bool]], top: int
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
    kept = {
        key: sorted(rows, key=lambda row: (-row[2], row[0], row[1]))[:top]
        for key, rows in ranked.items()
    }
    wanted = [row[3] for rows in kept.values() for row in rows]
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
        for key, rows in kept.items()
    }


def _percentiles(
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
