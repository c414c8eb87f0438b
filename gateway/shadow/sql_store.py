"""The shadow store on SQLite or PostgreSQL: one SQLAlchemy Core implementation on a sync
engine, called through `asyncio.to_thread`. The gateway writes in batches (one transaction
each) and reads only for a report, so a thread hop per batch costs nothing that matters, and
no async driver (aiosqlite, greenlet) is needed. The schema (`gateway.shadow.schema`) is made
on first use."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.shadow import schema
from gateway.shadow.differ import Difference, generalise
from gateway.shadow.records import Record, RouteSummary
from gateway.shadow.redaction import redact
from gateway.shadow.schema import comparisons, differences, drops
from gateway.shadow.summaries import summarise

ERROR_CHARS = 500


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
                schema.create(connection)
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
        with self.engine.connect() as connection:
            return summarise(connection, route, since, self.top)


def _details(record: Record) -> list[tuple[bool, Difference]]:
    """The record's differences, each with whether it is on a noisy path."""
    return [(False, d) for d in record.differences] + [(True, d) for d in record.noisy]
