"""Where rows were deleted: the memory that keeps a replay from bringing them back.

A delete removes the row, and with it the source position that guards the row against
older events. Replaying a stretch of a topic that holds a create and a later delete of the
same row would then re-insert the row with the create, and remove it again only when the
replayed delete arrives: a reader, or a crash, in between sees a row the monolith deleted
long ago. So each applied delete leaves its key and position in `cdc_tombstones`, in the
same transaction, and an upsert of a key whose tombstone is as new or newer is skipped. A
truncate leaves one tombstone for the whole table (key `*`, never a key's encoding: keys
are JSON arrays).

Tombstones are kept for `retention` (default 7 days: Kafka's default `retention.ms`, the
longest a replay can reach back on a topic with default settings) after the delete was
applied, then purged, at most once a minute, in a batch's transaction. An event older than
a purged tombstone, replayed after that, would be applied again: set the retention to at
least the topics' retention (`CDC_TOMBSTONE_RETENTION`, `--tombstone-retention`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

TOMBSTONES_TABLE: Final = "cdc_tombstones"
TABLE_KEY: Final = "*"  # the tombstone of a truncate: every key of the table
DEFAULT_RETENTION: Final = timedelta(days=7)
PURGE_EVERY_SECONDS: Final = 60.0
# SQLite before 3.32 allows 999 bound variables per statement.
_SQLITE_CHUNK: Final = 900


def _texts(name: str) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=postgresql.ARRAY(sa.Text()))


def key_text(key: tuple[Any, ...]) -> str:
    """A key as the tombstone stores it: its JSON array (values JSON lacks as text)."""
    return orjson.dumps(list(key), default=str).decode()


class Tombstones:
    """The `cdc_tombstones` table, read and written inside the sink's transactions."""

    def __init__(self, table: sa.Table, dialect: str, retention: timedelta) -> None:
        self.table = table
        self.retention = retention
        self._postgresql = dialect == "postgresql"
        self._insert = postgresql.insert if self._postgresql else sqlite.insert
        self._purged_at = time.monotonic()
        t = table.c
        select = sa.select(t.key, t.position)
        if self._postgresql:
            # One array parameter, joined: `key = ANY(:keys)` compared every tombstone with
            # every key once psycopg prepared it (a generic plan hashes no array): a batch
            # slowed from 0.1 to 1 s by 30k tombstones (`bench cdc`).
            keys = sa.func.unnest(_texts("keys")).table_valued("key").render_derived()
            select = select.join(keys, t.key == keys.c.key)
        else:
            select = select.where(t.key.in_(sa.bindparam("keys", expanding=True)))
        self._select = select.where(t.target == sa.bindparam("target"))
        self._newest = sa.select(sa.func.max(t.position)).where(t.target == sa.bindparam("target"))
        insert = self._insert(table)
        if self._postgresql:
            # One statement for the batch's deletes, not one round trip each.
            rows = (
                sa.func.unnest(_texts("keys"), _texts("positions"))
                .table_valued("k", "p")
                .render_derived()
            )
            insert = insert.from_select(
                ["target", "key", "position", "deleted_at"],
                sa.select(
                    sa.bindparam("target", type_=sa.String()),
                    rows.c.k,
                    rows.c.p,
                    sa.bindparam("deleted_at", type_=sa.DateTime(timezone=True)),
                ),
            )
        self._record = insert.on_conflict_do_update(
            index_elements=["target", "key"],
            set_={"position": insert.excluded.position, "deleted_at": insert.excluded.deleted_at},
            where=t.position < insert.excluded.position,
        )

    def newest_of_all(self, connection: Connection, target: str) -> str | None:
        """The newest tombstone position of `target` (one index probe)."""
        newest: str | None = connection.execute(self._newest, {"target": target}).scalar()
        return newest

    def newest(self, connection: Connection, target: str, keys: list[str]) -> dict[str, str]:
        """The tombstone positions of these keys of `target` (and of the table, `*`)."""
        wanted = [TABLE_KEY, *keys]
        if self._postgresql:
            rows = list(connection.execute(self._select, {"target": target, "keys": wanted}))
        else:
            rows = []
            for start in range(0, len(wanted), _SQLITE_CHUNK):
                chunk = wanted[start : start + _SQLITE_CHUNK]
                rows += connection.execute(self._select, {"target": target, "keys": chunk})
        return {row[0]: row[1] for row in rows}

    def record(
        self, connection: Connection, target: str, deleted: Iterable[tuple[str, str]]
    ) -> None:
        """Leave (key, position) tombstones; an existing newer one stays."""
        now = datetime.now(UTC)
        pairs = list(deleted)
        if not pairs:
            return
        if self._postgresql:
            keys, positions = [k for k, _ in pairs], [p for _, p in pairs]
            connection.execute(
                self._record,
                {"target": target, "keys": keys, "positions": positions, "deleted_at": now},
            )
            return
        params = [
            {"target": target, "key": key, "position": position, "deleted_at": now}
            for key, position in pairs
        ]
        connection.execute(self._record, params)

    def purge(self, connection: Connection) -> None:
        """Drop the tombstones older than the retention (at most once a minute)."""
        if time.monotonic() - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = time.monotonic()
        cutoff = datetime.now(UTC) - self.retention
        connection.execute(sa.delete(self.table).where(self.table.c.deleted_at < cutoff))
