"""The dev capture's change table (cdc/capture.py), as a writing transaction sees it.

The triggers give every captured row change a `seq` in `cdc_changes`, and the relay
publishes it as the event's position (`source.lsn` and the commit part of
`source.sequence`). SQLite has one writer at a time, so the rows a writing transaction sees
above the change table's sequence read at its start are its own, plus at most changes that
other transactions committed before its first write (pysqlite begins the transaction there):
older changes, which the bridge applies first. `written_since` gives, per source table, the
last seq among them, so once the bridge records that position in `cdc_positions` the
transaction's last change there is applied. The monolith
reports it in its write answers for the gateway's read-your-writes
(legacy_monolith/commit_position.py). No Kafka here: the monolith imports this module.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

CHANGE_TABLE = "cdc_changes"
SCHEMA = "public"  # the name Debezium would give: the monolith's PostgreSQL schema


def installed(connection: Connection) -> bool:
    """Whether the capture's change table exists (the capture may be installed later)."""
    query = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name")
    return connection.execute(query, {"name": CHANGE_TABLE}).first() is not None


def last_seq(connection: Connection) -> int:
    """The highest seq ever given (AUTOINCREMENT keeps it in sqlite_sequence, so rows the
    relay deleted still count)."""
    query = text("SELECT seq FROM sqlite_sequence WHERE name = :name")
    return int(connection.execute(query, {"name": CHANGE_TABLE}).scalar() or 0)


def written_since(connection: Connection, seq: int) -> dict[str, int]:
    """Per source table (`public.products`), the last seq above `seq`."""
    query = text(f"SELECT tbl, max(seq) FROM {CHANGE_TABLE} WHERE seq > :seq GROUP BY tbl")  # noqa: S608
    return {f"{SCHEMA}.{tbl}": int(last) for tbl, last in connection.execute(query, {"seq": seq})}
