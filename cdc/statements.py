"""Statements compiled once and run as the driver's own executemany (or COPY).

The sink builds each statement with SQLAlchemy once, compiles it for the dialect, and runs
it through the DBAPI cursor with the columns' bind processors applied (what SQLAlchemy
would store): per row, that is all the work between Python and the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError


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
