"""The bridge's applied positions as the gateway reads them: in the background, only while
wanted, and never stale (a failed or old read says nothing)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdc.envelope import position
from gateway.rollout.watermark import Watermark
from new_services.search import manage as search
from tests.support.shared_store import Clock

pytestmark = pytest.mark.anyio
DEADLINE = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, with a deadline


def applied(url: str, topic: str, commit: int) -> None:
    """What the bridge writes with the rows it applied."""
    engine = sa.create_engine(url)
    row = {"t": topic, "p": position(commit, commit), "at": datetime.now(UTC)}
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM cdc_positions WHERE topic = :t"), row)
            connection.execute(
                sa.text(
                    "INSERT INTO cdc_positions (topic, position, source_ts_ms, applied_at)"
                    " VALUES (:t, :p, 0, :at)"
                ),
                row,
            )
    finally:
        engine.dispose()


@pytest.fixture
def search_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search.migrate(url)
    return url


@pytest.fixture
async def watermark(search_db: str) -> AsyncIterator[Watermark]:
    mark = Watermark(search_db, "legacy", poll=0.02)
    yield mark
    await mark.close()


async def test_positions_are_read_only_while_wanted(search_db: str, watermark: Watermark) -> None:
    applied(search_db, "legacy.public.products", 41)
    assert watermark.applied() is None  # never read: nothing is known
    assert watermark.stats.polls == 0 and not watermark.polling
    watermark.want(30)
    await until(lambda: watermark.stats.polls > 0, "a first read")
    seen = watermark.applied()
    assert seen is not None and seen["public.products"].commit_lsn == 41
    assert not seen["public.products"].covers(42)
    applied(search_db, "legacy.public.products", 42)
    await until(
        lambda: (a := watermark.applied()) is not None and a["public.products"].covers(42),
        "the new position",
    )


async def test_polling_stops_when_nobody_wants_it(search_db: str) -> None:
    clock = Clock()
    watermark = Watermark(search_db, "legacy", poll=0.02, clock=clock)
    try:
        watermark.want(5)
        await until(lambda: watermark.stats.polls >= 2, "two reads")
        clock.now += 5
        await until(lambda: not watermark.polling, "polling to stop")
        polls = watermark.stats.polls
        await asyncio.sleep(0.1)  # five poll intervals: none may happen
        assert watermark.stats.polls == polls
        watermark.want(5)
        await until(lambda: watermark.stats.polls > polls, "polling to resume")
    finally:
        await watermark.close()


async def test_an_old_read_is_not_fresh(search_db: str) -> None:
    clock = Clock()
    watermark = Watermark(search_db, "legacy", poll=0.02, clock=clock)
    try:
        applied(search_db, "legacy.public.products", 7)
        watermark.want(60)
        await until(lambda: watermark.stats.polls > 0, "a first read")
        assert watermark.applied() is not None
        clock.now += watermark.stale_after + 0.001  # e.g. the reads have hung since
        assert watermark.applied() is None
    finally:
        await watermark.close()


async def test_an_unreadable_database_gives_no_positions(tmp_path: Path) -> None:
    """A missing file is reported, not created: a new empty database would say nothing
    was applied, but a wrong path must not look like a bridge that is behind either."""
    missing = tmp_path / "nowhere" / "search.db"
    watermark = Watermark(f"sqlite:///{missing}", "legacy", poll=0.02)
    try:
        watermark.want(30)
        await until(lambda: watermark.stats.failures >= 2, "failed reads")
        assert watermark.applied() is None
        assert watermark.stats.last_error and "unable to open" in watermark.stats.last_error
        assert not missing.exists()
    finally:
        await watermark.close()


async def test_postgresql_positions(pg_url: str) -> None:
    search.migrate(pg_url)
    applied(pg_url, "legacy.public.products", 5_000_000_000)
    watermark = Watermark(pg_url, "legacy", poll=0.02)
    try:
        watermark.want(30)
        await until(lambda: watermark.stats.polls > 0, "a first read")
        seen = watermark.applied()
        assert seen is not None and seen["public.products"].covers(5_000_000_000)
    finally:
        await watermark.close()
