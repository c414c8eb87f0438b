"""A DEVELOPMENT STAND-IN FOR DEBEZIUM: change capture for the monolith's SQLite database.

Production captures changes with the Debezium PostgreSQL connector. SQLite has no
replication log, so for the embedded default and the tests this module does the same job
the simple way, and publishes what Debezium would:

- `install`: triggers on each captured table record every row change, in the writing
  transaction itself, in the change table `cdc_changes` (seq is monotonic: SQLite has one
  writer at a time, so seq order is commit order).
- `snapshot`: one `op: r` event per row, read in one transaction at change seq L (Debezium's
  snapshot at an LSN); the change rows up to L are reflected in it and deleted.
- `relay`: publishes the change rows in seq order as Debezium-format events (`record.py`:
  same topics `<prefix>.public.<table>`, envelope, key, a tombstone after each delete,
  `source.connector` "sqlite-dev", lsn = seq), waits for Kafka to acknowledge them, then
  deletes what it published.

Updates carry `before: null` and deletes only the key in `before`, as Debezium does for a
table with REPLICA IDENTITY DEFAULT.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Producer
from sqlalchemy.engine import Connection, Engine, make_url

from cdc.errors import CdcError
from cdc.record import Field, Source, zoned_timestamp
from common.change_table import CHANGE_TABLE, SCHEMA

log = logging.getLogger("strangler.cdc.capture")

RELAY_BATCH = 5000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Table:
    name: str
    source: Source
    timestamps: frozenset[str]  # DATETIME columns: SQLite text -> ZonedTimestamp


def _field(name: str, declared: str, key: bool) -> Field:
    kind = declared.upper()
    if "INT" in kind:
        return Field(name, "int64" if "BIG" in kind else "int32", optional=not key)
    if kind.startswith(("DATETIME", "TIMESTAMP")):
        return Field(name, "string", "io.debezium.time.ZonedTimestamp", optional=not key)
    if kind in ("REAL", "FLOAT", "DOUBLE"):
        return Field(name, "double", optional=not key)
    if kind == "BOOLEAN":
        return Field(name, "boolean", optional=not key)
    return Field(name, "string", optional=not key)


class Capture:
    """Triggers, snapshot and relay for some tables of one SQLite database."""

    def __init__(
        self, database_url: str, prefix: str, tables: list[str], *, with_schemas: bool = True
    ) -> None:
        for name in tables:
            # Table names go into trigger DDL: only plain identifiers are accepted.
            if not _IDENTIFIER.match(name):
                raise CdcError(f"not a table name: {name!r}")
        url = make_url(database_url)
        if url.get_backend_name() != "sqlite":
            raise CdcError("the dev capture reads SQLite only; use Debezium for PostgreSQL")
        if not url.database or not Path(url.database).is_file():
            raise CdcError(f"no SQLite database at {url.database!r}")
        self.engine: Engine = sa.create_engine(url, connect_args={"timeout": 30})
        self.prefix = prefix
        self.names = tables
        self.with_schemas = with_schemas
        self.db = Path(url.database).stem
        self.tables: dict[str, Table] = {}

    def close(self) -> None:
        self.engine.dispose()

    def install(self) -> None:
        """Create the change table and the triggers (idempotent)."""
        with self.engine.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {CHANGE_TABLE} ("
                "seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, op TEXT NOT NULL,"
                " row TEXT NOT NULL, ts_ms INTEGER NOT NULL)"
            )
            for name in self.names:
                table = self._describe(connection, name)
                self.tables[name] = table
                self._triggers(connection, table)

    def _describe(self, connection: Connection, name: str) -> Table:
        info = connection.exec_driver_sql(f"PRAGMA table_info({name})").all()
        if not info:
            raise CdcError(f"no table {name!r} in the source database")
        keys = tuple(row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0)
        fields = tuple(_field(row[1], row[2], row[1] in keys) for row in info)
        source = Source(self.prefix, SCHEMA, name, fields, keys, self.db, self.with_schemas)
        stamps = frozenset(f.name for f in fields if f.logical == "io.debezium.time.ZonedTimestamp")
        return Table(name, source, stamps)

    def _triggers(self, connection: Connection, table: Table) -> None:
        def row(alias: str, names: list[str]) -> str:
            return "json_object(" + ", ".join(f"'{n}', {alias}.{n}" for n in names) + ")"

        names = [f.name for f in table.source.fields]
        now_ms = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
        for op, event, alias, columns in (
            ("c", "INSERT", "NEW", names),
            ("u", "UPDATE", "NEW", names),
            ("d", "DELETE", "OLD", list(table.source.key)),
        ):
            # Identifiers are checked in __init__ and read from PRAGMA table_info.
            trigger = (
                f"CREATE TRIGGER IF NOT EXISTS cdc_{table.name}_{op} AFTER {event} ON {table.name}"  # noqa: S608
                f" BEGIN INSERT INTO {CHANGE_TABLE} (tbl, op, row, ts_ms)"
                f" VALUES ('{table.name}', '{op}', {row(alias, columns)}, {now_ms}); END"
            )
            connection.exec_driver_sql(trigger)

    def _row(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        for name in table.timestamps & row.keys():
            if isinstance(row[name], str):
                row[name] = zoned_timestamp(datetime.fromisoformat(row[name]))
        return row

    def create_topics(self, producer: Producer) -> None:
        """Make sure the topics exist before anyone subscribes (a metadata request creates
        them where auto-creation is on, as on the mock cluster; Debezium does the same)."""
        for table in self.tables.values():
            topic = table.source.topic
            metadata = producer.list_topics(topic=topic, timeout=30).topics.get(topic)
            if metadata is None or metadata.error is not None:
                reason = metadata.error if metadata is not None else "missing"
                raise CdcError(f"topic {topic} is not available: {reason}")

    def snapshot(self, producer: Producer) -> int:
        """Publish every row as `op: r` at the current change position; return how many."""
        sent = 0
        with self.engine.connect() as connection, connection.begin():
            at = connection.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM cdc_changes")
            lsn = int(at.scalar_one())
            rows = [
                (table, dict(row._mapping))
                for table in self.tables.values()
                for row in connection.exec_driver_sql(f"SELECT * FROM {table.name}")  # noqa: S608
            ]
            for index, (table, row) in enumerate(rows):
                marker = "first" if index == 0 else "last" if index == len(rows) - 1 else "true"
                self._publish(producer, table, "r", None, self._row(table, row), lsn, marker)
                sent += 1
        _flush(producer)
        with self.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM cdc_changes WHERE seq <= ?", (lsn,))
        return sent

    def relay(self, producer: Producer, limit: int = RELAY_BATCH) -> int:
        """Publish up to `limit` pending changes, then delete them; return how many."""
        with self.engine.connect() as connection:
            pending = connection.exec_driver_sql(
                "SELECT seq, tbl, op, row, ts_ms FROM cdc_changes ORDER BY seq LIMIT ?", (limit,)
            ).all()
        if not pending:
            return 0
        for seq, name, op, text, ts_ms in pending:
            table = self.tables[name]
            row = self._row(table, json.loads(text))
            if op == "d":
                self._publish(producer, table, "d", row, None, seq, "false", ts_ms)
                producer.produce(table.source.topic, key=table.source.key_bytes(row), value=None)
            else:
                self._publish(producer, table, op, None, row, seq, "false", ts_ms)
        _flush(producer)
        with self.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM cdc_changes WHERE seq <= ?", (pending[-1][0],))
        return len(pending)

    def _publish(
        self,
        producer: Producer,
        table: Table,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        lsn: int,
        snapshot: str,
        ts_ms: int | None = None,
    ) -> None:
        from cdc.record import now_ms

        source = table.source
        value = source.value_bytes(
            op,
            before,
            after,
            lsn=lsn,
            last_commit=lsn if op != "r" else None,
            ts_ms=ts_ms if ts_ms is not None else now_ms(),
            snapshot=snapshot,
        )
        key_row = after if after is not None else before
        assert key_row is not None
        while True:
            try:
                producer.produce(source.topic, key=source.key_bytes(key_row), value=value)
                return
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it

    def run(self, producer: Producer, stop: threading.Event, interval: float = 0.02) -> None:
        """Relay until `stop` is set, polling the change table every `interval` seconds."""
        while not stop.is_set():
            try:
                if self.relay(producer):
                    continue
            except sa.exc.OperationalError as exc:  # the monolith holds the write lock
                log.warning("capture: %s", exc.orig)
            stop.wait(interval)


def _flush(producer: Producer) -> None:
    if producer.flush(60):
        raise CdcError("Kafka did not acknowledge the published changes within 60s")
