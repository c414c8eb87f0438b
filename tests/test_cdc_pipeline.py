"""End to end over the Kafka protocol: monolith writes -> dev capture -> Kafka (librdkafka's
mock cluster) -> bridge -> search database, including crashes and a database outage."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer

from cdc import mapping
from cdc.capture import Capture
from cdc.cluster import MockCluster
from cdc.consumer import Bridge, Options
from cdc.sink import SqlSink, create_engine
from legacy_monolith import manage as monolith
from legacy_monolith.models import Category, Product
from new_services.search import manage as search
from new_services.search.models import SearchDocument

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0


def wait_for(condition: Callable[[], bool], what: str, seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.02)  # polling a condition, with a deadline: not synchronisation by sleep


@dataclass
class Shop:
    """The monolith's database, written the way the monolith writes it."""

    engine: sa.Engine
    rng: random.Random

    def products(self) -> list[int]:
        with self.engine.connect() as connection:
            return list(connection.scalars(sa.select(Product.id)))

    def change(self) -> None:
        with self.engine.begin() as connection:
            self.change_in(connection)

    def changes(self, count: int) -> None:
        """Many changes in one transaction (a bulk job): one lock, one commit."""
        with self.engine.begin() as connection:
            for _ in range(count):
                self.change_in(connection)

    def change_in(self, connection: sa.Connection) -> None:
        ids = list(connection.scalars(sa.select(Product.id)))
        choice = self.rng.random()
        now = datetime.now(UTC)
        table = Product.__table__
        if choice < 0.4 or not ids:
            connection.execute(
                sa.insert(table).values(
                    name=f"New Lamp {self.rng.randrange(10**6)}",
                    description="fresh",
                    price_cents=self.rng.randint(100, 999),
                    category_id=self.rng.randint(1, 12),
                    stock=1,
                    updated_at=now,
                )
            )
        elif choice < 0.8:
            connection.execute(
                sa.update(table)
                .where(table.c.id == self.rng.choice(ids))
                .values(price_cents=self.rng.randint(100, 999), updated_at=now)
            )
        elif choice < 0.97:
            # Products that were ordered cannot go (foreign key): delete an unordered one.
            connection.execute(
                sa.text(
                    "DELETE FROM products WHERE id = (SELECT max(id) FROM products p"
                    " WHERE NOT EXISTS (SELECT 1 FROM order_items o WHERE o.product_id = p.id))"
                )
            )
        else:
            category = Category.__table__
            connection.execute(
                sa.update(category)
                .where(category.c.id == self.rng.randint(1, 12))
                .values(name=f"Renamed {self.rng.randrange(1000)}")
            )


def source_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    p, c = Product.__table__, Category.__table__
    query = sa.select(
        p.c.id, p.c.name, p.c.description, p.c.price_cents, c.c.slug, c.c.name, p.c.updated_at
    ).join(c, c.c.id == p.c.category_id)
    with engine.connect() as connection:
        return [_normal(row) for row in connection.execute(query.order_by(p.c.id))]


def target_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    d = SearchDocument.__table__
    query = sa.select(
        d.c.product_id,
        d.c.name,
        d.c.description,
        d.c.price_cents,
        d.c.category_slug,
        d.c.category_name,
        d.c.updated_at,
    )
    with engine.connect() as connection:
        return [_normal(row) for row in connection.execute(query.order_by(d.c.product_id))]


def _normal(row: Any) -> tuple[Any, ...]:
    *values, stamp = tuple(row)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return (*values, stamp)


@dataclass
class Pipeline:
    cluster: MockCluster
    source_url: str
    target_url: str
    shop: Shop
    capture: Capture
    source: sa.Engine
    target: sa.Engine

    def in_sync(self) -> bool:
        return source_rows(self.source) == target_rows(self.target)


@pytest.fixture
def cluster() -> MockCluster:
    return MockCluster()


def make_pipeline(cluster: MockCluster, tmp_path: Path, target_url: str) -> Iterator[Pipeline]:
    source_url = f"sqlite:///{tmp_path / 'legacy.db'}"
    monolith.migrate(source_url)
    monolith.seed(source_url, 150)
    search.migrate(target_url)
    names = [t.rsplit(".", 1)[1] for t in mapping.load().topics]
    capture = Capture(source_url, "legacy", names)
    capture.install()
    producer = cluster.producer()
    capture.create_topics(producer)
    capture.snapshot(producer)
    stop = threading.Event()
    relay = threading.Thread(target=capture.run, args=(producer, stop), daemon=True)
    relay.start()
    source = sa.create_engine(source_url)
    target = create_engine(target_url)
    try:
        yield Pipeline(
            cluster,
            source_url,
            target_url,
            Shop(source, random.Random(5)),
            capture,
            source,
            target,
        )
    finally:
        stop.set()
        relay.join(timeout=30)
        capture.close()
        source.dispose()
        target.dispose()


@pytest.fixture
def pipeline(cluster: MockCluster, tmp_path: Path) -> Iterator[Pipeline]:
    yield from make_pipeline(cluster, tmp_path, f"sqlite:///{tmp_path / 'search.db'}")


@pytest.fixture
def pg_pipeline(cluster: MockCluster, tmp_path: Path, pg_url: str) -> Iterator[Pipeline]:
    yield from make_pipeline(cluster, tmp_path, pg_url)


@dataclass
class Running:
    bridge: Bridge
    thread: threading.Thread


def start_bridge(pipeline: Pipeline, group: str = "tests") -> Running:
    sink = SqlSink(pipeline.target, mapping.load())
    sink.open()
    bridge = Bridge(
        mapping.load(), sink, Options(pipeline.cluster.bootstrap_servers, group, max_wait=0.01)
    )
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    return Running(bridge, thread)


def stop_bridge(running: Running) -> None:
    running.bridge.stop()
    running.thread.join(timeout=30)
    assert not running.thread.is_alive()


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_monolith_writes_reach_the_search_database(
    target: str, request: pytest.FixtureRequest
) -> None:
    pipeline: Pipeline = request.getfixturevalue(
        "pipeline" if target == "sqlite" else "pg_pipeline"
    )
    running = start_bridge(pipeline)
    try:
        wait_for(pipeline.in_sync, "the snapshot to arrive")
        assert len(target_rows(pipeline.target)) == 150
        for _ in range(200):
            pipeline.shop.change()
        wait_for(pipeline.in_sync, "the changes to arrive")
        stats = running.bridge.metrics.snapshot()["topics"]
        assert stats["legacy.public.products"]["applied"] >= 150
        assert all(t["dead_lettered"] == 0 for t in stats.values())
    finally:
        stop_bridge(running)


def test_the_bridge_waits_for_the_database_and_catches_up(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    running = start_bridge(pipeline)
    try:
        wait_for(pipeline.in_sync, "the snapshot to arrive")
        # An exclusive lock makes every write fail with "database is locked": an outage.
        blocker = sqlite3.connect(tmp_path / "search.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for _ in range(50):
                pipeline.shop.change()
            wait_for(
                lambda: running.bridge.metrics.state == "waiting-for-database",
                "the bridge to notice the outage",
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        wait_for(pipeline.in_sync, "the bridge to catch up")
        assert running.bridge.metrics.state == "running"
    finally:
        stop_bridge(running)


def test_a_poison_message_goes_to_the_dead_letter_topic(pipeline: Pipeline) -> None:
    producer = pipeline.cluster.producer()
    producer.produce("legacy.public.products", key=b'{"id": 1}', value=b"{not json")
    producer.flush(10)
    running = start_bridge(pipeline)
    try:
        pipeline.shop.change()
        wait_for(pipeline.in_sync, "the good events to arrive past the bad one")
        dlq = Consumer(
            {
                "bootstrap.servers": pipeline.cluster.bootstrap_servers,
                "group.id": "dlq-reader",
                "auto.offset.reset": "earliest",
            }
        )
        dlq.subscribe(["strangler.cdc.dlq"])
        message = None
        deadline = time.monotonic() + DEADLINE
        while message is None and time.monotonic() < deadline:
            candidate = dlq.poll(0.2)
            if candidate is not None and candidate.error() is None:
                message = candidate
        dlq.close()
        assert message is not None, "nothing on the dead-letter topic"
        assert message.value() == b"{not json"
        headers = {k: v.decode() for k, v in message.headers() or []}
        assert headers["__connect.errors.topic"] == "legacy.public.products"
        assert "not JSON" in headers["__connect.errors.exception.message"]
        assert int(headers["__connect.errors.offset"]) >= 0
        stats = running.bridge.metrics.snapshot()["topics"]["legacy.public.products"]
        assert stats["dead_lettered"] == 1
    finally:
        stop_bridge(running)


def _bridge_process(pipeline: Pipeline, status: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "cdc",
        "run",
        "--bootstrap-servers",
        pipeline.cluster.bootstrap_servers,
        "--database-url",
        pipeline.target_url,
        "--group-id",
        "killed",
        "--status-file",
        str(status),
        "--max-batch",
        "50",  # small batches: kills land between and inside them
        # A killed group member holds its partitions until its session times out; one
        # bridge taking every partition resumes at once, from the group's committed offsets.
        "--assign-all",
        # Offsets are read only once the dead process's session (consumer group state) has
        # timed out: 6s, the brokers' minimum, instead of the default 45s.
        "--kafka-option",
        "session.timeout.ms=6000",
        "--kafka-option",
        "heartbeat.interval.ms=1000",
    ]
    with (status.parent / "bridge.log").open("ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _state(status: Path) -> str | None:
    try:
        state: str = json.loads(status.read_text())["state"]
    except (OSError, ValueError):
        return None
    return state


def _applied(status: Path) -> int:
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return 0
    return sum(t["applied"] + t["skipped"] for t in data["topics"].values())


# After a SIGKILL the next bridge starts applying only ~45s later on the mock cluster (not
# yet explained: it is not the consumer session timeout). Two kills keep this under budget.
@pytest.mark.timeout(300)
def test_sigkill_mid_stream_loses_and_doubles_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    for _ in range(2):
        # A backlog, so the kill lands while batches are being applied.
        pipeline.shop.changes(300)
        status.unlink(missing_ok=True)
        bridge = _bridge_process(pipeline, status)
        try:
            wait_for(
                lambda: _applied(status) > 0 or pipeline.in_sync(),
                "the bridge to apply something",
                seconds=120,
            )
        finally:
            os.kill(bridge.pid, signal.SIGKILL)
            bridge.wait(timeout=30)
    status.unlink(missing_ok=True)
    bridge = _bridge_process(pipeline, status)
    try:
        wait_for(lambda: _state(status) == "running", "the restarted bridge to run")
        wait_for(pipeline.in_sync, "the restarted bridge to catch up")
    finally:
        bridge.kill()
        bridge.wait(timeout=30)
    rows = target_rows(pipeline.target)
    assert len(rows) == len({row[0] for row in rows})  # nothing doubled


def test_sigterm_finishes_the_batch_and_exits_cleanly(pipeline: Pipeline, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    bridge = _bridge_process(pipeline, status)
    try:
        wait_for(lambda: _state(status) == "running", "the bridge to run")
        wait_for(pipeline.in_sync, "the snapshot to arrive")
    finally:
        bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(timeout=30)
    assert code == 0
    assert _state(status) == "stopped"
