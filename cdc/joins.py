"""Joined columns: a row mapped with `join:` carries columns of a lookup table's row, filled
in when the row is written and brought up to date when the lookup row changes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cdc.batch import Upsert
from cdc.mapping import TableMapping
from cdc.statements import Statements


class Joins:
    """The joins of the target's `tables` (reflected by the sink)."""

    def __init__(self, tables: dict[str, sa.Table], statements: Statements) -> None:
        self.tables = tables
        self.statements = statements

    def fill(self, connection: Connection, mapping: TableMapping, ops: list[Upsert]) -> None:
        """The upserts' joined columns, from the lookup rows as they are now."""
        join = mapping.join
        assert join is not None
        keys = {op.row[join.on] for op in ops if op.row.get(join.on) is not None}
        names = [source for _, source in join.columns]
        found = self._lookup(connection, join.target, join.lookup_key, names, keys) if keys else {}
        for op in ops:
            if join.on not in op.row:
                continue  # the join key was TOASTed: the joined columns stay as they are
            values = found.get(op.row[join.on])
            for column, source in join.columns:
                op.row[column] = join.missing if values is None else values[source]

    def propagate(
        self, connection: Connection, lookup: TableMapping, follower: TableMapping, keys: list[Any]
    ) -> None:
        """Rows joined to changed lookup rows take the lookup's current values."""
        join = follower.join
        assert join is not None
        names = [source for _, source in join.columns]
        current = self._lookup(
            connection, lookup.target, join.lookup_key, names, {k[0] for k in keys}
        )
        if not current:
            return
        statement = self.statements.propagate(follower, self.tables[follower.target], join)
        params = [
            {"j_key": key, **{f"j_{c}": values[s] for c, s in join.columns}}
            for key, values in current.items()
        ]
        connection.execute(statement, params)

    def _lookup(
        self, connection: Connection, target: str, key: str, names: list[str], keys: set[Any]
    ) -> dict[Any, dict[str, Any]]:
        table = self.tables[target]
        rows = connection.execute(
            sa.select(table.c[key], *(table.c[n] for n in names)).where(table.c[key].in_(keys))
        )
        return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}
