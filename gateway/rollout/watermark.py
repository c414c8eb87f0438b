"""How far the CDC bridge has applied each source table, as the gateway reads it: off the
request path, in the background, and only while someone is pinned.

The bridge writes the last applied source position per topic into the new service's
database (`cdc_positions`, in the same transaction as the rows: common/positions.py), so a
position read there is never ahead of the data. A `Watermark` reads that table every `poll`
seconds while it is wanted (`want`: a write pinned someone, or a pinned user read) and not
at all otherwise. The request path only looks at the last read (`applied`), which is None
unless it is fresh: a read older than `stale_after` (the database is down, locked or
unreachable) must not end a pin, so the pin then lasts until its window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from common import positions
from common.positions import Applied

log = logging.getLogger("strangler.watermark")

Reader = Callable[[Engine, str], Mapping[str, Applied]]


@dataclass
class WatermarkStats:
    polls: int = 0  # successful reads
    failures: int = 0
    last_error: str | None = None
    read_at: float | None = None  # clock time of the last successful read


class Watermark:
    def __init__(
        self,
        url: str,
        prefix: str,
        poll: float,
        clock: Callable[[], float] = time.monotonic,
        reader: Reader = positions.read,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.poll = poll
        self.stale_after = max(1.0, 10 * poll)
        self.clock = clock
        self.stats = WatermarkStats()
        self._reader = reader
        self._engine = _engine(url)  # connects on the first read, never here
        self._applied: Mapping[str, Applied] = {}
        self._until = 0.0  # keep polling until this clock time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def polling(self) -> bool:
        return self._task is not None and self._wake.is_set()

    def want(self, seconds: float) -> None:
        """Keep the positions fresh for the next `seconds` (starts polling at once)."""
        self._until = max(self._until, self.clock() + seconds)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def applied(self) -> Mapping[str, Applied] | None:
        """The positions of the last read, if it is fresh; None otherwise."""
        read_at = self.stats.read_at
        if read_at is None or self.clock() - read_at > self.stale_after:
            return None
        return self._applied

    async def _run(self) -> None:
        while True:
            if self.clock() >= self._until:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._read()
            await asyncio.sleep(self.poll)

    async def _read(self) -> None:
        try:
            applied = await asyncio.to_thread(self._reader, self._engine, self.prefix)
        except (positions.PositionsUnavailable, SQLAlchemyError, OSError) as exc:
            self.stats.failures += 1
            if self.stats.last_error is None:
                log.warning("cannot read the CDC positions (%s): pins last their window", exc)
            self.stats.last_error = str(exc)
            return
        if self.stats.last_error is not None:
            log.warning("CDC positions readable again")
            self.stats.last_error = None
        self._applied = applied
        self.stats.polls += 1
        self.stats.read_at = self.clock()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._wake.clear()
        await asyncio.to_thread(self._engine.dispose)


def _engine(url: str) -> Engine:
    """A small engine for one query a poll; short timeouts so a dead server fails fast."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Read-only: a wrong path is an error to report, not a new empty database.
        path = parsed.database or ""
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1),
            poolclass=NullPool,  # a file opened per read: nothing held between polls
        )
    return sa.create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 2, "options": "-c statement_timeout=2000"},
    )
