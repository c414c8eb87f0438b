"""How far the bridge has applied each source table: what the gateway reads.

The sink writes one row per mapped topic into the target database's `cdc_positions` table
(topic, position, source_ts_ms, applied_at), in the same transaction as the rows it applied,
so a position read there is never ahead of the data. `read` returns them per source table
(`public.products`), for the gateway's read-your-writes check: a write the monolith made in
a transaction that committed at WAL position C is in the new service's database once
`applied["public.products"].commit_lsn >= C`.

A position is the highest one applied on any of the topic's partitions. Debezium partitions
by primary key, so with more than one partition a row's change can still be waiting on
another partition; `covers` is exact for one partition per topic (Debezium's default).
Snapshot reads carry commit 0 (the snapshot marker), so they cover no streamed write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

TABLE = "cdc_positions"


@dataclass(frozen=True, slots=True)
class Applied:
    topic: str
    position: str | None  # "CCCCCCCCCCCCCCCC/LLLLLLLLLLLLLLLL" (envelope.position)
    source_ts_ms: int | None  # the source's commit time of the newest applied change
    applied_at: datetime | None  # when the bridge committed it

    @property
    def commit_lsn(self) -> int | None:
        """The commit LSN part of the position (0 for a snapshot read)."""
        return None if self.position is None else int(self.position.partition("/")[0], 16)

    def covers(self, commit_lsn: int) -> bool:
        """Whether a change committed at `commit_lsn` has been applied (see module doc)."""
        return self.commit_lsn is not None and self.commit_lsn >= commit_lsn


class PositionsUnavailable(Exception):
    """The target database cannot be read (down, or refusing connections)."""


def source_table(topic: str, prefix: str) -> str:
    """`legacy.public.products` -> `public.products`."""
    return topic.removeprefix(f"{prefix}.")


def read(engine: Engine, prefix: str) -> dict[str, Applied]:
    """The last applied position per source table, from the target database ({} before the
    bridge's tables exist there)."""
    query = sa.text(f"SELECT topic, position, source_ts_ms, applied_at FROM {TABLE}")  # noqa: S608
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(TABLE):
                return {}
            rows = connection.execute(query).all()
    except (OperationalError, InterfaceError) as exc:
        raise PositionsUnavailable(f"cannot read {TABLE}: {exc.orig}") from exc
    return {
        source_table(topic, prefix): Applied(topic, position, ts, _datetime(at))
        for topic, position, ts, at in rows
    }


def _datetime(value: datetime | str | None) -> datetime | None:
    # SQLite hands back text for a DateTime read through a plain SELECT.
    return datetime.fromisoformat(value) if isinstance(value, str) else value
