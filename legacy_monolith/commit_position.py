"""Where a write committed, for the gateway's read-your-writes (gateway/rollout/consistency.py).

A write's answer carries `X-Strangler-Commit-Position: public.products=42, ...`: for each
table the transaction changed, a position in the change stream at or after its change, in
the numbering the CDC bridge records in `cdc_positions` (common/positions.py), so that the
gateway can tell when the new service's database has the write:

- SQLite with the dev capture (cdc/capture.py, the development stand-in for Debezium): per
  captured table, the seq of the transaction's last change there, the very position the
  relay gives that change's event (common/change_table.py). Exact.
- PostgreSQL (Debezium): the tables from `pg_stat_xact_user_tables` (every row the
  transaction inserted, updated or deleted, bulk statements included), each with
  `pg_current_wal_insert_lsn()` read after COMMIT, as an integer. Debezium's
  `source.sequence[0]`, the commit part of the positions the bridge records, is the last
  commit LSN it has passed: the end of the preceding transaction's commit record (the LSN
  pgoutput reports for a COMMIT, `txn->end_lsn`). The insert position after our COMMIT is
  at or beyond the end of our commit record whatever `synchronous_commit` says
  (`pg_current_wal_lsn()`, the write position, can trail it when commits are
  asynchronous), so it is never below the value that marks our write as applied; it can be
  above it by WAL other sessions wrote meanwhile, which keeps a reader pinned a little
  longer, never shorter.
- Anything else, or SQLite without the capture: no header (the gateway then pins for its
  whole window).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from common import change_table

HEADER = "X-Strangler-Commit-Position"

_CHANGED = text(
    "SELECT schemaname, relname FROM pg_stat_xact_user_tables"
    " WHERE n_tup_ins + n_tup_upd + n_tup_del > 0"
)
_INSERT_LSN = text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")


class CommitPosition:
    """One write transaction: `begin` first in it, `before_commit` last in it, `after_commit`
    once it committed, then `header`."""

    def __init__(self, session: Session) -> None:
        self.dialect = session.get_bind().dialect.name
        self.positions: dict[str, int] | None = None
        self._since: int | None = None  # SQLite: the change table's seq at the start
        self._tables: list[str] = []  # PostgreSQL: the tables changed

    def begin(self, session: Session) -> None:
        if self.dialect == "sqlite":
            connection = session.connection()
            if change_table.installed(connection):
                self._since = change_table.last_seq(connection)

    def before_commit(self, session: Session) -> None:
        session.flush()  # the ORM's pending changes reach the database (and the triggers)
        if self.dialect == "sqlite" and self._since is not None:
            self.positions = change_table.written_since(session.connection(), self._since)
        elif self.dialect == "postgresql":
            self._tables = [f"{schema}.{name}" for schema, name in session.execute(_CHANGED)]

    def after_commit(self, session: Session) -> None:
        if self.dialect == "postgresql" and self._tables:
            lsn = int(session.execute(_INSERT_LSN).scalar_one())
            session.rollback()  # end the read's own transaction
            self.positions = dict.fromkeys(self._tables, lsn)

    def header(self) -> dict[str, str]:
        if not self.positions:
            return {}
        value = ", ".join(
            f"{table}={position}" for table, position in sorted(self.positions.items())
        )
        return {HEADER: value}
