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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cdc import mapping
from cdc.capture import Capture
from cdc.cluster import MockCluster
from cdc.consumer import Bridge, Options
from cdc.envelope import Change
from cdc.metrics import render
from cdc.outcome import Outcome
from cdc.sink import SqlSink, create_engine
from legacy_monolith import manage as monolith
from legacy_monolith.models import Category, Product
from new_services.search import manage as search
from new_services.search.models import SearchDocument
from tests.cdc.test_cdc_envelope import MESSAGE_VALUE  # the documented logical-message fixture

ROOT = Path(__file__).resolve().parents[2]
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


def start_bridge(
    pipeline: Pipeline,
    group: str = "tests",
    *,
    assign_all: bool = False,
    status_file: Path | None = None,
) -> Running:
    sink = SqlSink(pipeline.target, mapping.load())
    sink.open()
    options = Options(
        pipeline.cluster.bootstrap_servers,
        group,
        max_wait=0.01,
        assign_all=assign_all,
        status_file=status_file,
    )
    bridge = Bridge(mapping.load(), sink, options)
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


@pytest.mark.parametrize("assign_all", [False, True], ids=["group", "assign-all"])
def test_logical_decoding_messages_are_consumed_and_counted(
    pipeline: Pipeline, assign_all: bool
) -> None:
    # Debezium writes `op: m` events to <prefix>.message, a topic of no table.
    producer = pipeline.cluster.producer()
    producer.produce("legacy.message", key=b'{"prefix": "audit"}', value=json.dumps(MESSAGE_VALUE))
    producer.flush(10)
    running = start_bridge(pipeline, assign_all=assign_all)
    try:
        wait_for(pipeline.in_sync, "the snapshot to arrive")
        wait_for(
            lambda: "legacy.message" in running.bridge.metrics.topics,
            "the logical decoding message to be consumed",
        )
        stats = running.bridge.metrics.snapshot()["topics"]["legacy.message"]
        assert (stats["ignored"], stats["dead_lettered"]) == (1, 0)
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
        # One bridge: it takes its partitions without the group's rebalancing, so a
        # restart resumes at once (issue 17). In group mode a killed member holds its
        # partitions until its session times out; on a real broker static membership
        # (--instance-id, KIP-345) avoids that wait, but librdkafka's mock cluster does
        # not implement it, and its rebalance takes at least 5 s there.
        "--assign-all",
    ]
    with (status.parent / "bridge.log").open("ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _status(status: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(status.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _state(status: Path) -> str | None:
    state: str | None = _status(status).get("state")
    return state


def _published(target: sa.Engine) -> list[tuple[str, str | None]]:
    with target.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                sa.text(  # type: ignore[misc]
                    "SELECT topic, position FROM cdc_positions ORDER BY topic"
                )
            )
        ]


KILLS = 3


@pytest.mark.timeout(180)
def test_sigkill_mid_stream_loses_and_doubles_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    mid_stream = 0
    for _ in range(KILLS):
        # A backlog of ~30 batches of 50, so the kill lands while batches are being applied.
        pipeline.shop.changes(1500)
        before = _published(pipeline.target)
        bridge = _bridge_process(pipeline, status)
        try:
            wait_for(
                lambda: _published(pipeline.target) != before,  # noqa: B023
                "the bridge to commit a batch",
            )
        finally:
            os.kill(bridge.pid, signal.SIGKILL)
            bridge.wait(timeout=30)
        mid_stream += not pipeline.in_sync()
    # Each kill came after a committed batch and before the backlog was through.
    assert mid_stream == KILLS
    bridge = _bridge_process(pipeline, status)
    try:
        wait_for(
            lambda: _status(status).get("pid") == bridge.pid,
            "the restarted bridge to publish its status",
        )
        wait_for(pipeline.in_sync, "the restarted bridge to catch up")
        # Each start after a SIGKILL is a restart after a crash, and says so.
        restarted = _status(status)
        assert (restarted["state"], restarted["restarts"]) == ("running", KILLS)
        assert "without a final status (killed?)" in restarted["last_error"]
    finally:
        bridge.kill()
        bridge.wait(timeout=30)
    rows = target_rows(pipeline.target)
    assert rows == source_rows(pipeline.source)  # nothing lost, nothing applied twice
    assert len(rows) == len({row[0] for row in rows})


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


class _BrokenSink(SqlSink):
    """A sink with a bug: what no event should ever cause, and the bridge must not hide."""

    def apply(self, changes: Sequence[Change]) -> Outcome:
        raise RuntimeError("a bug in the sink")


def test_a_crash_is_reported_as_crashed_not_stopped(pipeline: Pipeline, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    sink = _BrokenSink(pipeline.target, mapping.load())
    sink.open()
    options = Options(pipeline.cluster.bootstrap_servers, "tests", status_file=status)
    bridge = Bridge(mapping.load(), sink, options)
    with pytest.raises(RuntimeError, match="a bug in the sink"):
        bridge.run()  # the error is not swallowed: the process exits and is restarted
    crashed = _status(status)
    assert crashed["state"] == "crashed"
    assert crashed["last_error"] == "RuntimeError: a bug in the sink"
    assert "state crashed" in render(crashed)


def _operator(pipeline: Pipeline, status: Path, *request: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdc", *request, "--status-file", str(status)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "requested" in result.stdout


def _products_partitions(pipeline: Pipeline) -> list[int]:
    consumer = Consumer({"bootstrap.servers": pipeline.cluster.bootstrap_servers, "group.id": "w"})
    try:
        topic = consumer.list_topics("legacy.public.products", timeout=10).topics
        return sorted(topic["legacy.public.products"].partitions)
    finally:
        consumer.close()


def _find(pipeline: Pipeline, text: bytes) -> tuple[int, int]:
    """The partition and offset of the products message whose value contains `text`."""
    consumer = Consumer(
        {"bootstrap.servers": pipeline.cluster.bootstrap_servers, "group.id": "finder"}
    )
    consumer.assign(
        [
            TopicPartition("legacy.public.products", p, OFFSET_BEGINNING)
            for p in _products_partitions(pipeline)
        ]
    )
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None and text in (message.value() or b""):
                return message.partition() or 0, message.offset() or 0
    finally:
        consumer.close()
    raise AssertionError(f"no message with {text!r}")


def _operator_done(status: Path, result: str) -> bool:
    return any(e["result"] == result for e in _status(status).get("operator", []))


def test_an_operator_skips_one_event_and_replays_a_partition(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    status = tmp_path / "status.json"
    stop_bridge(start_bridge(pipeline, status_file=status))
    with pipeline.source.begin() as connection:
        connection.execute(sa.text("UPDATE products SET name = 'Skipped' WHERE id = 1"))
    partition, offset = _find(pipeline, b"Skipped")
    _operator(pipeline, status, "skip", "legacy.public.products", str(partition), str(offset))
    # Read before the first message: a skip also gets a bridge out of a crash loop.
    running = start_bridge(pipeline, status_file=status)
    try:
        wait_for(lambda: _operator_done(status, "skipped"), "the bridge to skip the event")
        pipeline.shop.changes(5)  # and it goes on past it
        wait_for(
            lambda: len(target_rows(pipeline.target)) == len(source_rows(pipeline.source)),
            "the changes after the skipped one",
        )
        assert next(r for r in target_rows(pipeline.target) if r[0] == 1)[1] != "Skipped"
        assert f"skip legacy.public.products[{partition}]@{offset} (skipped)" in render(
            _status(status)
        )
        # Replaying the partitions from the start restores a row lost in the target, applies
        # nothing twice, and the skip holds.
        with pipeline.target.begin() as connection:
            connection.execute(sa.text("DELETE FROM search_documents WHERE product_id = 2"))
        for each in _products_partitions(pipeline):
            _operator(pipeline, status, "replay", "legacy.public.products", str(each), "0")
        wait_for(
            lambda: 2 in {row[0] for row in target_rows(pipeline.target)},
            "the replay to restore the row lost in the target",
        )
        wait_for(lambda: _operator_done(status, "consuming again from offset 0"), "the replay")
        assert next(r for r in target_rows(pipeline.target) if r[0] == 1)[1] != "Skipped"
    finally:
        stop_bridge(running)


def test_a_database_down_at_start_is_waited_for(cluster: MockCluster, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    # Nothing listens on port 1: the database is "down" for the whole test.
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/search")
    bridge = Bridge(
        mapping.load(),
        SqlSink(engine, mapping.load()),
        Options(cluster.bootstrap_servers, "tests", status_file=status),
    )
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: _state(status) == "waiting-for-database", "the bridge to wait")
    finally:
        bridge.stop()
        thread.join(timeout=30)
        engine.dispose()
    assert not thread.is_alive()
    assert _state(status) == "stopped"
