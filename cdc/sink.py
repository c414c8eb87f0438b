"""Applying a batch to the target database: SQLAlchemy Core, one transaction per batch.

The same code serves SQLite and PostgreSQL: both speak `INSERT ... ON CONFLICT (key) DO
UPDATE ... WHERE`, so upserts are batched `executemany` calls whose WHERE clause skips rows
the target already has at a newer (or the same) source position; deletes are guarded the
same way. The statements are built with SQLAlchemy once, compiled for the dialect, and run
as the driver's own `executemany` (values through the columns' bind processors, as
SQLAlchemy would store them): per row, that is all the work there is between Python and
the database. On PostgreSQL (psycopg) complete rows go faster still: COPY into a temporary
table of the session, then one `INSERT ... SELECT ... ON CONFLICT` with the same guard.

The guard is what makes redelivery harmless: replaying any suffix of a topic finds every
row at its position and changes nothing. A deleted row has no position left to guard it,
so deletes and truncates leave tombstones (cdc/tombstones.py) that upserts are checked
against in the same transaction: a replayed create never brings a deleted row back.

Errors are sorted at this edge: a lost or locked database (and, on PostgreSQL, a missing
table or privilege) raises `SinkUnavailable` (the consumer retries the whole batch later,
committing nothing). Values the target's columns cannot hold were rejected by the planner
already (cdc/columns.py); a batch that the database still refuses (a constraint, a value)
is retried one event per transaction, and the events that still fail come back as
`EventError`s for the dead-letter topic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from cdc.batch import Delete, Plan, TableBatch, Truncate, Upsert, plan
from cdc.columns import RowCheck, row_check
from cdc.envelope import Change
from cdc.errors import EventError, MappingError, SinkUnavailable
from cdc.joins import Joins
from cdc.mapping import Mapping, TableMapping
from cdc.outcome import Counts, Outcome, merge
from cdc.statements import Compiled, Staged, Statements
from cdc.tombstones import DEFAULT_RETENTION, TABLE_KEY, TOMBSTONES_TABLE, Tombstones, key_text
from cdc.values import DECODE_ERRORS
from common.validation import ConfigIssue

POSITIONS_TABLE = "cdc_positions"
# What one event can make a transaction fail with: a constraint or a value the database
# refuses (IntegrityError, DataError, a bind it cannot make), or a bind processor's
# conversion (the decoders' failure modes). The outages are sorted out before these.
_EVENT_FAILURES = (StatementError, *DECODE_ERRORS)
# Short: a locked SQLite file is an outage like any other, retried by the consumer's backoff.
SQLITE_BUSY_TIMEOUT_SECONDS = 1.0


def create_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: searches keep reading while a batch is written. NORMAL is durable in WAL mode
    # across application crashes (only an OS crash can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SqlSink:
    """The target database, SQLite or PostgreSQL, through SQLAlchemy Core."""

    def __init__(
        self, engine: Engine, mapping: Mapping, tombstone_retention: timedelta = DEFAULT_RETENTION
    ) -> None:
        self.engine = engine
        self.mapping = mapping
        self.tombstone_retention = tombstone_retention
        self.tables: dict[str, sa.Table] = {}
        self.checks: dict[str, RowCheck] = {}  # by target: the values' types, before the write
        self.positions: sa.Table | None = None
        self.tombstones: Tombstones | None = None
        self._statements = Statements(engine)
        self._joins = Joins(self.tables, self._statements)
        self._copy = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"

    def open(self) -> None:
        """Reflect the target tables and check the mapping against them (every problem)."""
        metadata = sa.MetaData()
        names = sorted(
            {t.target for t in self.mapping.tables} | {POSITIONS_TABLE, TOMBSTONES_TABLE}
        )
        try:
            with self.engine.connect() as connection:
                existing = set(sa.inspect(connection).get_table_names())
                metadata.reflect(connection, only=[n for n in names if n in existing])
        except (OperationalError, InterfaceError) as exc:
            raise SinkUnavailable(f"cannot reach the target database: {exc.orig}") from exc
        issues = []
        for table in self.mapping.tables:
            if table.target not in metadata.tables:
                issues.append(ConfigIssue(table.line, f"no table {table.target!r} in the target"))
                continue
            target = metadata.tables[table.target]
            wanted = [(c.target, c.line) for c in table.columns]
            wanted += (
                [(name, table.join.line) for name, _ in table.join.columns] if table.join else []
            )
            wanted += [(table.position, table.line)] if table.position else []
            for name, line in wanted:
                if name not in target.c:
                    issues.append(ConfigIssue(line, f"{table.target!r} has no column {name!r}"))
            if tuple(c.name for c in target.primary_key) != table.key:
                issues.append(ConfigIssue(table.line, f"key is not {table.target!r}'s primary key"))
            self.tables[table.target] = target
            columns = [c.target for c in table.columns if c.target in target.c]
            self.checks[table.target] = row_check(target, columns, self.engine.dialect.name)
        tombstones = metadata.tables.get(TOMBSTONES_TABLE)
        guarded = [t for t in self.mapping.tables if t.position is not None]
        if tombstones is None and guarded:
            issues.append(
                ConfigIssue(
                    guarded[0].line,
                    f"no table {TOMBSTONES_TABLE!r} in the target for the positions' deletes"
                    " (run the search service's migrations)",
                )
            )
        if issues:
            raise MappingError(self.mapping.source, issues)
        self.positions = metadata.tables.get(POSITIONS_TABLE)
        if tombstones is not None:
            self.tombstones = Tombstones(
                tombstones, self.engine.dialect.name, self.tombstone_retention
            )

    def apply(self, changes: Sequence[Change]) -> Outcome:
        """Apply the changes in one transaction; if one of them is refused, apply them one
        at a time and return those that fail as rejected (each with the database's reason)."""
        whole = plan(changes, self.mapping, self.checks)
        try:
            return Outcome(self._transaction(whole), tuple(whole.rejected), whole.progress)
        except _EVENT_FAILURES:
            pass  # a constraint or a value: find the culprits below
        topics: dict[str, Counts] = {}
        rejected = list(whole.rejected)
        failed = {e.origin for e in rejected}
        for change in changes:
            if change.origin in failed:
                continue
            single = plan([change], self.mapping, self.checks)
            try:
                merge(topics, self._transaction(single))
            except _EVENT_FAILURES as exc:
                reason = str(exc.orig) if isinstance(exc, DBAPIError) else f"{exc!r}"
                rejected.append(EventError(change.origin, f"rejected by the database: {reason}"))
        return Outcome(topics, tuple(rejected), whole.progress)

    def _transaction(self, work: Plan) -> dict[str, Counts]:
        topics = {topic: Counts(ignored=n) for topic, n in work.ignored.items()}
        try:
            with self.engine.begin() as connection:
                for batch in work.tables.values():
                    if not batch.events and batch.truncate is None:
                        continue
                    changed = self._table(connection, batch)
                    ops = len(batch.ops)
                    # Folded events count as applied: their effect is the newest one's.
                    folded = batch.events - batch.dropped - ops
                    counts = Counts(
                        changed + folded, ops - changed + batch.dropped, 0, batch.truncates
                    )
                    merge(topics, {batch.mapping.topic: counts})
                if self.tombstones is not None:
                    self.tombstones.purge(connection)
                self._progress(connection, work)
        except (OperationalError, InterfaceError, InternalError) as exc:
            raise SinkUnavailable(f"target database: {exc.orig}") from exc
        except ProgrammingError as exc:
            if self.engine.dialect.name != "postgresql":
                raise  # SQLite: a value it cannot bind, one event's problem
            # PostgreSQL: a missing table or column, a privilege: the database's
            # configuration, not a row; retried until someone fixes it.
            raise SinkUnavailable(f"target database: {exc.orig}") from exc
        return topics

    def _table(self, connection: Connection, batch: TableBatch) -> int:
        mapping, table = batch.mapping, self.tables[batch.mapping.target]
        if batch.truncate is not None:
            self._truncate(connection, mapping, table, batch.truncate)
        deletes = [op for op in batch.ops.values() if isinstance(op, Delete)]
        upserts = [op for op in batch.ops.values() if isinstance(op, Upsert)]
        if upserts and self.tombstones is not None:
            upserts = self._alive(connection, mapping, upserts)
        changed = self._deletes(connection, mapping, table, deletes) if deletes else 0
        if upserts:
            if mapping.join is not None:
                self._joins.fill(connection, mapping, upserts)
            changed += self._upserts(connection, mapping, table, upserts)
        for follower in self.mapping.joined_by(mapping.target):
            if upserts:
                self._joins.propagate(connection, mapping, follower, [op.key for op in upserts])
        return changed

    def _truncate(
        self, connection: Connection, mapping: TableMapping, table: sa.Table, truncate: Truncate
    ) -> None:
        statement = sa.delete(table)
        if truncate.position is not None and mapping.position is not None:
            # A replayed truncate leaves the rows that are newer than it.
            column = table.c[mapping.position]
            statement = statement.where(sa.or_(column.is_(None), column < truncate.position))
        connection.execute(statement)
        if truncate.position is not None and self.tombstones is not None:
            self.tombstones.record(connection, mapping.target, [(TABLE_KEY, truncate.position)])

    def _alive(
        self, connection: Connection, mapping: TableMapping, upserts: list[Upsert]
    ) -> list[Upsert]:
        """The upserts newer than their key's tombstone (and the table's)."""
        assert self.tombstones is not None
        newest = self.tombstones.newest_of_all(connection, mapping.target)
        if newest is None:
            return upserts
        # Streaming, every upsert is newer than every tombstone: only a replay (or an older
        # event redelivered) has keys to look up.
        older = [op for op in upserts if op.position is not None and op.position <= newest]
        if not older:
            return upserts
        keys = {id(op): key_text(op.key) for op in older}
        found = self.tombstones.newest(connection, mapping.target, list(keys.values()))
        table_wide = found.get(TABLE_KEY, "")
        blocked = {
            id(op)
            for op in older
            if op.position <= max(found.get(keys[id(op)], ""), table_wide)  # type: ignore[operator]
        }
        return [op for op in upserts if id(op) not in blocked] if blocked else upserts

    def _deletes(
        self, connection: Connection, mapping: TableMapping, table: sa.Table, ops: list[Delete]
    ) -> int:
        changed = 0
        for guarded in (True, False):
            group = [op for op in ops if (op.position is not None) == guarded]
            if not group:
                continue
            statement = self._statements.delete(mapping, table, guarded)
            params = [
                {f"k_{k}": v for k, v in zip(mapping.key, op.key, strict=True)} for op in group
            ]
            if guarded:
                for param, op in zip(params, group, strict=True):
                    param["p_position"] = op.position
            changed += statement.run(connection, params)
            if guarded and self.tombstones is not None:
                deleted = [(key_text(op.key), op.position) for op in group]
                self.tombstones.record(connection, mapping.target, deleted)  # type: ignore[arg-type]
        return changed

    def _upserts(
        self, connection: Connection, mapping: TableMapping, table: sa.Table, ops: list[Upsert]
    ) -> int:
        # executemany wants one statement: group rows by the columns they carry (a TOASTed
        # column is left out of its row) and by whether they have a position to guard with.
        groups: dict[tuple[tuple[str, ...], bool], list[dict[str, Any]]] = {}
        for op in ops:
            groups.setdefault((tuple(op.row), op.position is not None), []).append(op.row)
        changed = 0
        complete = {c.target for c in mapping.columns}
        for (columns, guarded), rows in groups.items():
            if not complete.issubset(columns):
                # A TOASTed column is missing: the row exists (the source only omits values of
                # rows it had), and an INSERT of the partial row would fail NOT NULL on SQLite.
                changed += self._partial_updates(connection, mapping, table, columns, guarded, rows)
                continue
            statement: Compiled | Staged
            if self._copy:
                statement = self._statements.staged_upsert(mapping, table, columns, guarded)
            else:
                statement = self._statements.upsert(mapping, table, columns, guarded)
            changed += statement.run(connection, rows)
        return changed

    def _partial_updates(
        self,
        connection: Connection,
        mapping: TableMapping,
        table: sa.Table,
        columns: tuple[str, ...],
        guarded: bool,
        rows: list[dict[str, Any]],
    ) -> int:
        statement = self._statements.update(mapping, table, columns, guarded)
        params = [{f"u_{k}": v for k, v in row.items()} for row in rows]
        return int(connection.execute(statement, params).rowcount)

    def _progress(self, connection: Connection, work: Plan) -> None:
        if self.positions is None or not work.progress:
            return
        table = self.positions
        insert = self._statements.insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=["topic"],
            set_={
                "position": insert.excluded.position,
                "source_ts_ms": insert.excluded.source_ts_ms,
                "applied_at": insert.excluded.applied_at,
            },
            where=sa.or_(table.c.position.is_(None), table.c.position <= insert.excluded.position),
        )
        now = datetime.now(UTC)
        connection.execute(
            statement,
            [
                {
                    "topic": topic,
                    "position": p.position,
                    "source_ts_ms": p.source_ts_ms,
                    "applied_at": now,
                }
                for topic, p in work.progress.items()
            ],
        )
