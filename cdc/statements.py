"""Statements compiled once and run as the driver's own executemany (or COPY).

The sink builds each statement with SQLAlchemy once (`Statements`, one per shape: kind,
table, columns, guard), compiles it for the dialect, and runs it through the DBAPI cursor
with the columns' bind processors applied (what SQLAlchemy would store): per row, that is
all the work between Python and the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cdc.mapping import Join, TableMapping


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement compiled once for the dialect: its SQL and how to lay out its values."""

    sql: str
    names: tuple[str, ...] | None  # positional parameter order (qmark), None for named
    processors: tuple[tuple[str, Any], ...]  # bind processors of the columns that have one

    @classmethod
    def of(
        cls, statement: Any, engine: Engine, types: dict[str, sa.types.TypeEngine[Any]]
    ) -> Compiled:
        compiled = statement.compile(dialect=engine.dialect)
        processors = []
        for name, kind in types.items():
            processor = kind.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            if processor is not None:
                processors.append((name, processor))
        names = tuple(compiled.positiontup) if compiled.positional else None
        return cls(compiled.string, names, tuple(processors))

    def run(self, connection: Connection, rows: list[dict[str, Any]]) -> int:
        """executemany over the rows (dicts by bind name); the rows it changed."""
        for name, processor in self.processors:
            for row in rows:
                value = row.get(name)
                if value is not None:
                    row[name] = processor(value)
        names = self.names
        params: list[Any] = rows if names is None else [tuple(r[n] for n in names) for r in rows]
        return int(connection.exec_driver_sql(self.sql, params).rowcount)


@dataclass(frozen=True, slots=True)
class Staged:
    """PostgreSQL's faster path for complete rows: COPY them into a temporary table, then
    one `INSERT ... SELECT ... ON CONFLICT` (about twice the rows/s of executemany here)."""

    create: str  # the session's stage table, empty at each commit
    copy: str
    insert: str
    clear: str
    columns: tuple[str, ...]

    def run(self, connection: Connection, rows: list[dict[str, Any]]) -> int:
        driver = connection.connection.driver_connection
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(self.create)
                with cursor.copy(self.copy) as copy:
                    for row in rows:
                        copy.write_row([row[c] for c in self.columns])
                cursor.execute(self.insert)
                changed = int(cursor.rowcount)
                cursor.execute(self.clear)
                return changed
        except psycopg.Error as exc:
            # As SQLAlchemy would raise it: an outage or a row the database refuses.
            raise DBAPIError.instance(self.insert, None, exc, psycopg.Error) from exc


class Statements:
    """The sink's statements for one target database, each built the first time its shape
    is asked for. Guarded ones leave a row at a newer (or the same) position alone."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._built: dict[tuple[Any, ...], Any] = {}
        self._compiled: dict[tuple[Any, ...], Compiled] = {}
        self._staged: dict[tuple[Any, ...], Staged] = {}

    def delete(self, mapping: TableMapping, table: sa.Table, guarded: bool) -> Compiled:
        """DELETE by key (`k_<key>`), guarded by `p_position`."""
        cache_key = ("delete", mapping.target, guarded)
        if cache_key not in self._compiled:
            where = [table.c[k] == sa.bindparam(f"k_{k}") for k in mapping.key]
            types = {f"k_{k}": table.c[k].type for k in mapping.key}
            if guarded and mapping.position is not None:
                column = table.c[mapping.position]
                where.append(sa.or_(column.is_(None), column < sa.bindparam("p_position")))
                types["p_position"] = column.type
            statement = sa.delete(table).where(*where)
            self._compiled[cache_key] = Compiled.of(statement, self.engine, types)
        return self._compiled[cache_key]

    def update(
        self, mapping: TableMapping, table: sa.Table, columns: tuple[str, ...], guarded: bool
    ) -> Any:
        """UPDATE of a partial row (`u_<column>`, the key included), for executemany."""
        cache_key = ("update", mapping.target, columns, guarded)
        if cache_key not in self._built:
            where = [table.c[k] == sa.bindparam(f"u_{k}") for k in mapping.key]
            if guarded and mapping.position is not None:
                column = table.c[mapping.position]
                where.append(sa.or_(column.is_(None), column < sa.bindparam(f"u_{column.name}")))
            values: dict[str, Any] = {
                c: sa.bindparam(f"u_{c}") for c in columns if c not in mapping.key
            }
            self._built[cache_key] = sa.update(table).where(*where).values(values)
        return self._built[cache_key]

    def upsert(
        self, mapping: TableMapping, table: sa.Table, columns: tuple[str, ...], guarded: bool
    ) -> Compiled:
        cache_key = ("upsert", mapping.target, columns, guarded)
        if cache_key not in self._compiled:
            insert = self.insert(table).values({c: sa.bindparam(c) for c in columns})
            statement = _on_conflict(mapping, table, insert, columns, guarded)
            types = {c: table.c[c].type for c in columns}
            self._compiled[cache_key] = Compiled.of(statement, self.engine, types)
        return self._compiled[cache_key]

    def staged_upsert(
        self, mapping: TableMapping, table: sa.Table, columns: tuple[str, ...], guarded: bool
    ) -> Staged:
        """The upsert through COPY (PostgreSQL with psycopg)."""
        cache_key = (mapping.target, columns, guarded)
        if cache_key not in self._staged:
            quote = self.engine.dialect.identifier_preparer.quote
            stage = sa.table(f"cdc_stage_{table.name}", *(sa.column(c) for c in columns))
            names = ", ".join(quote(c) for c in columns)
            insert = postgresql.insert(table).from_select(
                list(columns), sa.select(*(stage.c[c] for c in columns))
            )
            statement = _on_conflict(mapping, table, insert, columns, guarded)
            # Names come from the reflected table and the mapping's checked identifiers.
            self._staged[cache_key] = Staged(
                create=f"CREATE TEMPORARY TABLE IF NOT EXISTS {quote(stage.name)}"  # noqa: S608
                f" ON COMMIT DELETE ROWS AS SELECT * FROM {quote(table.name)} WITH NO DATA",
                copy=f"COPY {quote(stage.name)} ({names}) FROM STDIN",
                insert=str(statement.compile(dialect=self.engine.dialect)),
                clear=f"TRUNCATE {quote(stage.name)}",
                columns=columns,
            )
        return self._staged[cache_key]

    def propagate(self, follower: TableMapping, table: sa.Table, join: Join) -> Any:
        """UPDATE of the joined columns (`j_<column>`) of the rows joined to `j_key`."""
        cache_key = ("propagate", follower.target)
        if cache_key not in self._built:
            self._built[cache_key] = (
                sa.update(table)
                .where(table.c[join.on] == sa.bindparam("j_key"))
                .values({column: sa.bindparam(f"j_{column}") for column, _ in join.columns})
            )
        return self._built[cache_key]


def _on_conflict(
    mapping: TableMapping,
    table: sa.Table,
    insert: Any,
    columns: tuple[str, ...],
    guarded: bool,
) -> Any:
    """The upsert: newer rows replace older ones; a row at a newer position stays."""
    updates = {c: insert.excluded[c] for c in columns if c not in mapping.key}
    if not updates:
        return insert.on_conflict_do_nothing(index_elements=list(mapping.key))
    where = None
    if guarded and mapping.position is not None:
        column = table.c[mapping.position]
        where = sa.or_(column.is_(None), column < insert.excluded[mapping.position])
    return insert.on_conflict_do_update(index_elements=list(mapping.key), set_=updates, where=where)
