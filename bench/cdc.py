"""The CDC benchmark: the bridge against a raw upsert of the same rows, in one run.

N Debezium-format change events (creates, updates and deletes of `legacy.public.products`,
written by `cdc.record` with their JSON schemas, as Debezium's JsonConverter sends them by
default) are written to memory first. The production bridge (`cdc.consumer.Bridge` with
`cdc.sink.SqlSink`, default batch settings) consumes all of them from librdkafka's mock
cluster into a fresh SQLite file and into a fresh PostgreSQL database; its rate is N over the
time from the consumer being ready to the last event applied. All N events are in Kafka
before the bridge starts, as a backlog it catches up with: produced zstd-compressed (the
mock cluster keeps only ~5 MB per partition and drops the oldest messages beyond that; N
events at ~2.7 kB fit only compressed, which is checked), so that no producer shares the
bridge's process and its interpreter lock while it is timed, as a feeder thread did before.
The target's categories are loaded beforehand, so every product batch does its join lookup
for real.

A third run of the same events has the bridge plan each batch and apply nothing: the
rate of its own work (Kafka, parsing, planning), which bounds the ratio any sink could reach.
With the row operations per event those plans hold (after coalescing), it also gives the
ratio a sink would reach if it wrote each of them as fast as the raw executemany writes a
row (PostgreSQL's sink is faster than that: it stages rows with COPY).

The reference is the physical limit in the same database and run: the final rows (the state
the events leave behind, checked against what the bridge wrote) upserted into the emptied
table with one DBAPI `executemany` of `INSERT ... ON CONFLICT DO UPDATE` in one transaction,
three times (the median counts). The ratio divides the bridge's events/s by those rows/s.

Lag: a second, empty topic and target; events are produced at a fixed rate for a few
seconds while the bridge runs. Each event's lag is the time from its `produce()` call to the
commit of the transaction that applied it, read in this process with one clock: the sink is
wrapped to note the time when `SqlSink.apply` returns (the commit), per event. Polling the
target instead would add the poll interval to every figure and load the database.
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from bench.errors import BenchError
from cdc import mapping
from cdc.batch import plan
from cdc.cluster import MockCluster
from cdc.consumer import Bridge
from cdc.consumer import Options as BridgeOptions
from cdc.envelope import Change, position
from cdc.outcome import Counts, Outcome
from cdc.record import Field, Source
from cdc.sink import SqlSink, create_engine
from new_services.search import manage as search

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TOPIC = "legacy.public.products"
PRODUCTS = Source(
    "legacy",
    "public",
    "products",
    (
        Field("id", "int32", optional=False),
        Field("name", "string"),
        Field("description", "string"),
        Field("price_cents", "int32"),
        Field("category_id", "int32"),
        Field("stock", "int32"),
        Field("updated_at", "string", "io.debezium.time.ZonedTimestamp"),
    ),
    ("id",),
)
CATEGORIES = 12
CREATE_SHARE, UPDATE_SHARE = 0.4, 0.45  # the rest are deletes
DEADLINE_SECONDS = 300.0
RAW_RUNS = 3
LAG_WARMUP_EVENTS = 200
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "product_id",
    "name",
    "description",
    "price_cents",
    "category_id",
    "category_slug",
    "category_name",
    "updated_at",
    "source_position",
)


@dataclass(frozen=True)
class Options:
    events: int
    rate: int
    lag_seconds: int


@dataclass(frozen=True)
class Event:
    key: bytes
    value: bytes
    position: str


class Workload:
    """A deterministic stream of product changes, and the rows it leaves behind."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.live: dict[int, dict[str, Any]] = {}  # id -> source row
        self.ids: list[int] = []  # live ids, for random picks
        self.where: dict[int, int] = {}  # id -> index in ids
        self.positions: dict[int, str] = {}
        self.next_id = 1
        self.lsn = 0

    def events(self, count: int) -> Iterator[Event]:
        rng = self.rng
        for _ in range(count):
            self.lsn += 1
            lsn = self.lsn
            stamp = (_EPOCH + timedelta(seconds=lsn)).isoformat().replace("+00:00", "Z")
            choice = rng.random()
            if choice < CREATE_SHARE or not self.ids:
                pid = self.next_id
                self.next_id += 1
                row = {
                    "id": pid,
                    "name": f"Lamp {pid}",
                    "description": f"a lamp, number {pid}, for the benchmark",
                    "price_cents": rng.randint(100, 99_999),
                    "category_id": rng.randint(1, CATEGORIES),
                    "stock": rng.randint(0, 50),
                    "updated_at": stamp,
                }
                self._add(row)
                op, before, after = "c", None, row
            elif choice < CREATE_SHARE + UPDATE_SHARE:
                pid = rng.choice(self.ids)
                row = {**self.live[pid], "price_cents": rng.randint(100, 99_999)}
                row["updated_at"] = stamp
                self.live[pid] = row
                op, before, after = "u", None, row
            else:
                pid = rng.choice(self.ids)
                self._remove(pid)
                row = {"id": pid}
                op, before, after = "d", row, None
            self.positions[pid] = position(lsn, lsn)
            value = PRODUCTS.value_bytes(
                op, before, after, lsn=lsn, last_commit=lsn, ts_ms=int(time.time() * 1000)
            )
            yield Event(PRODUCTS.key_bytes(row), value, position(lsn, lsn))

    def _add(self, row: dict[str, Any]) -> None:
        self.live[row["id"]] = row
        self.where[row["id"]] = len(self.ids)
        self.ids.append(row["id"])

    def _remove(self, pid: int) -> None:
        del self.live[pid]
        index = self.where.pop(pid)
        last = self.ids.pop()
        if last != pid:
            self.ids[index] = last
            self.where[last] = index

    def final_rows(self) -> list[dict[str, Any]]:
        """The target rows the events leave behind, as the sink writes them."""
        rows = []
        for pid in sorted(self.live):
            source = self.live[pid]
            category = source["category_id"]
            rows.append(
                {
                    "product_id": pid,
                    "name": source["name"],
                    "description": source["description"],
                    "price_cents": source["price_cents"],
                    "category_id": category,
                    "category_slug": f"category-{category}",
                    "category_name": f"Category {category}",
                    "updated_at": datetime.fromisoformat(source["updated_at"]),
                    "source_position": self.positions[pid],
                }
            )
        return rows


@dataclass(frozen=True)
class Result:
    database: str
    events: int
    bridge_seconds: float
    rows: int
    raw_seconds: float
    lag_p50: float
    lag_p99: float
    lag_events: int

    @property
    def bridge_rate(self) -> float:
        return self.events / self.bridge_seconds

    @property
    def raw_rate(self) -> float:
        return self.rows / self.raw_seconds


def _produce(producer: Producer, event: Event) -> None:
    while True:
        try:
            producer.produce(TOPIC, key=event.key, value=event.value)
            return
        except BufferError:
            producer.poll(0.01)  # the local queue is full: let deliveries drain it


def _topics(producer: Producer) -> None:
    # A metadata request creates a topic on the mock cluster; the bridge needs every mapped one.
    for topic in mapping.load().topics:
        metadata = producer.list_topics(topic=topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise BenchError(f"topic {topic} is not available on the mock cluster")


class _TimedSink(SqlSink):
    """The production sink, noting when each applied batch's transaction committed."""

    def __init__(self, engine: Engine, on_applied: Callable[[Sequence[Change], float], None]):
        super().__init__(engine, mapping.load())
        self._on_applied = on_applied

    def apply(self, changes: Sequence[Change]) -> Outcome:
        outcome = super().apply(changes)
        self._on_applied(changes, time.perf_counter())
        return outcome


@contextmanager
def bridge(cluster: MockCluster, sink: SqlSink, group: str) -> Iterator[Bridge]:
    sink.open()
    ready = threading.Event()
    running = Bridge(
        mapping.load(), sink, BridgeOptions(cluster.bootstrap_servers, group, assign_all=True)
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            running.run(on_ready=ready.set)
        except BaseException as exc:  # reported by the waiting thread
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name=f"bridge-{group}", daemon=True)
    thread.start()
    ready.wait(DEADLINE_SECONDS)
    try:
        if failures:
            raise BenchError(f"the bridge failed: {failures[0]!r}")
        yield running
    finally:
        running.stop()
        thread.join(timeout=60)
    if failures:
        raise BenchError(f"the bridge failed: {failures[0]!r}")


def _processed(running: Bridge) -> int:
    stats = running.metrics.topics.get(TOPIC)
    return 0 if stats is None else stats.applied + stats.skipped + stats.dead_lettered


def wait_processed(running: Bridge, count: int) -> float:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while _processed(running) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"the bridge applied {_processed(running)} of {count} events")
        time.sleep(0.005)
    return time.perf_counter()


def prepare(engine: Engine, url: str) -> None:
    search.migrate(url)
    rows = [
        {"id": c, "slug": f"category-{c}", "name": f"Category {c}", "pos": position(0, c)}
        for c in range(1, CATEGORIES + 1)
    ]
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO search_categories (id, slug, name, source_position)"
                " VALUES (:id, :slug, :name, :pos)"
            ),
            rows,
        )


def check(engine: Engine, expected: list[dict[str, Any]], what: str) -> None:
    names = ("product_id", "name", "price_cents", "category_slug", "source_position")
    with engine.connect() as connection:
        found = [
            tuple(row)
            for row in connection.execute(
                sa.text(f"SELECT {', '.join(names)} FROM search_documents ORDER BY product_id")  # noqa: S608
            )
        ]
    wanted = [tuple(row[n] for n in names) for row in expected]
    if found != wanted:
        raise BenchError(f"{what}: the target differs from the events' final state")


def raw_upsert(engine: Engine, rows: list[dict[str, Any]]) -> float:
    """One DBAPI executemany of the final rows into the emptied table; its seconds."""
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM search_documents"))
    sqlite = engine.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "product_id")
    statement = (
        f"INSERT INTO search_documents ({', '.join(_COLUMNS)})"  # noqa: S608
        f" VALUES ({', '.join(mark for _ in _COLUMNS)})"
        f" ON CONFLICT (product_id) DO UPDATE SET {updates}"
        " WHERE search_documents.source_position IS NULL"
        " OR search_documents.source_position < excluded.source_position"
    )

    def value(row: dict[str, Any], column: str) -> Any:
        if column == "updated_at" and sqlite:  # as SQLAlchemy stores DATETIME in SQLite
            return row[column].replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return row[column]

    params = [tuple(value(row, c) for c in _COLUMNS) for row in rows]
    raw = engine.raw_connection()
    try:
        started = time.perf_counter()
        cursor = raw.cursor()
        cursor.executemany(statement, params)
        raw.commit()
        seconds = time.perf_counter() - started
        cursor.close()
    finally:
        raw.close()
    check(engine, rows, "raw executemany")
    return seconds


def preload(cluster: MockCluster, events: list[Event]) -> None:
    """Every event into the mock cluster before the bridge starts, zstd-compressed (as a
    Debezium producer may be configured), checking that none was dropped."""
    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "compression.type": "zstd",
            "linger.ms": 50,
            "batch.size": 4_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    _topics(producer)
    for event in events:
        _produce(producer, event)
    if producer.flush(120):
        raise BenchError("the events could not all be produced to the mock cluster")
    metadata = producer.list_topics(TOPIC, timeout=30).topics[TOPIC]
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap_servers, "group.id": "bench"})
    try:
        kept = 0
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), 30)
            if low != 0:
                raise BenchError(
                    f"the mock cluster dropped {low} events of partition {partition} "
                    "(it keeps ~5 MB per partition): run with fewer --events"
                )
            kept += high
    finally:
        consumer.close()
    if kept != len(events):
        raise BenchError(f"the mock cluster holds {kept} of {len(events)} events")


class _NoDatabase(SqlSink):
    """The bridge's own work without the database's: each batch is planned, as
    `SqlSink.apply` plans it, and reported applied. No sink can make the bridge faster.
    Counts the row operations (upserts and deletes) the plans hold."""

    def __init__(self) -> None:
        super().__init__(sa.create_engine("sqlite://"), mapping.load())
        self.operations = 0

    def open(self) -> None:
        pass

    def apply(self, changes: Sequence[Change]) -> Outcome:
        work = plan(changes, self.mapping)
        self.operations += sum(len(t.ops) for t in work.tables.values())
        return Outcome({TOPIC: Counts(applied=len(changes))}, (), work.progress)


@dataclass(frozen=True)
class Ceiling:
    """The bridge applying nothing: its rate, and the row operations per event it planned."""

    rate: float
    operations: float

    def at_raw_speed(self, raw_rate: float) -> float:
        """The ratio to `raw_rate` the bridge would reach if its sink wrote each row
        operation as fast as raw executemany writes a row."""
        return 1 / (raw_rate / self.rate + self.operations)


def ceiling(events: list[Event]) -> Ceiling:
    sink = _NoDatabase()
    seconds = throughput(sink, events, "bench")
    return Ceiling(len(events) / seconds, sink.operations / len(events))


def throughput(sink: SqlSink, events: list[Event], group: str) -> float:
    """Seconds the bridge takes to apply every event, all of them waiting in Kafka."""
    cluster = MockCluster()
    preload(cluster, events)
    with bridge(cluster, sink, group) as running:
        started = time.perf_counter()
        done = wait_processed(running, len(events))
    return done - started


def lag(engine: Engine, options: Options, seed: int) -> tuple[float, float, int]:
    """Lag p50 and p99 (seconds) at the fixed rate, and how many events were measured."""
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM search_documents"))
        connection.execute(sa.text("DELETE FROM cdc_positions"))
    workload = Workload(seed)
    warmup = list(workload.events(LAG_WARMUP_EVENTS))
    measured = list(workload.events(options.rate * options.lag_seconds))
    sent_at: dict[str, float] = {}
    lags: list[float] = []

    def applied(changes: Sequence[Change], now: float) -> None:
        for change in changes:
            if change.position is not None and change.position in sent_at:
                lags.append(now - sent_at[change.position])

    cluster = MockCluster()
    producer = cluster.producer()
    _topics(producer)
    sink = _TimedSink(engine, applied)
    with bridge(cluster, sink, "bench-lag") as running:
        for event in warmup:
            _produce(producer, event)
        producer.flush(60)
        wait_processed(running, len(warmup))
        started = time.perf_counter()
        for index, event in enumerate(measured):
            due = started + index / options.rate
            now = time.perf_counter()
            if due > now:
                producer.poll(due - now)  # serves delivery reports while it waits
            sent_at[event.position] = time.perf_counter()
            producer.produce(TOPIC, key=event.key, value=event.value)
        producer.flush(60)
        wait_processed(running, len(warmup) + len(measured))
    if len(lags) != len(measured):
        raise BenchError(f"lag: {len(lags)} of {len(measured)} events were seen applied")
    ordered = sorted(lags)
    return _percentile(ordered, 0.50), _percentile(ordered, 0.99), len(ordered)


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


@contextmanager
def postgres_database() -> Iterator[str]:
    admin = sa.create_engine(
        PG_ADMIN_URL,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 3},
    )
    name = f"strangler_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        raise BenchError(f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {exc.orig}") from exc
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(
    database: str, url: str, events: list[Event], rows: list[dict[str, Any]], options: Options
) -> Result:
    engine = create_engine(url)
    try:
        prepare(engine, url)
        seconds = throughput(SqlSink(engine, mapping.load()), events, f"bench-{database}")
        check(engine, rows, f"the bridge into {database}")
        # The median of a few runs: one executemany of ~50k rows takes a second or two, and
        # a single run of it varied by half between runs of the benchmark on a shared machine.
        raw_seconds = statistics.median(raw_upsert(engine, rows) for _ in range(RAW_RUNS))
        p50, p99, measured = lag(engine, options, seed=7)
    finally:
        engine.dispose()
    return Result(database, len(events), seconds, len(rows), raw_seconds, p50, p99, measured)


def table(results: list[Result]) -> str:
    lines = [
        f"{'database':<10}{'events':>9}{'bridge ev/s':>13}{'rows':>8}{'raw rows/s':>12}"
        f"{'lag p50':>10}{'lag p99':>10}"
    ]
    for r in results:
        lines.append(
            f"{r.database:<10}{r.events:>9}{r.bridge_rate:>13.0f}{r.rows:>8}{r.raw_rate:>12.0f}"
            f"{r.lag_p50 * 1000:>8.1f}ms{r.lag_p99 * 1000:>8.1f}ms"
        )
    return "\n".join(lines)


def run(options: Options) -> int:
    print(
        f"cdc benchmark: {options.events} events on {TOPIC} "
        f"({CREATE_SHARE:.0%} creates, {UPDATE_SHARE:.0%} updates, the rest deletes); "
        f"lag at {options.rate} events/s for {options.lag_seconds} s",
        flush=True,
    )
    workload = Workload(seed=5)
    started = time.perf_counter()
    events = list(workload.events(options.events))
    rows = workload.final_rows()
    # The benchmark's own objects (the workload, its events and expected rows: ~500k of
    # them) are frozen out of the garbage collector for the rest of the run. A bridge in
    # production holds none of them, and every full collection would walk them all: that
    # cost the bridge a fifth of its rate on SQLite.
    gc.collect()
    gc.freeze()
    size = sum(len(e.key) + len(e.value) for e in events) / len(events)
    print(
        f"events written in {time.perf_counter() - started:.1f} s ({size:.0f} bytes each on "
        f"average), leaving {len(rows)} rows",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="strangler-cdc-bench-") as work:
        url = f"sqlite:///{Path(work) / 'search.db'}"
        results.append(measure("sqlite", url, events, rows, options))
    with postgres_database() as url:
        results.append(measure("postgres", url, events, rows, options))
    bare = ceiling(events)
    print(table(results))
    print(
        f"the bridge without a database (consume, parse, plan): {bare.rate:.0f} events/s, "
        + ", ".join(f"{bare.rate / r.raw_rate:.3f} of raw {r.database}" for r in results)
        + " (the highest ratio any sink could reach)"
    )
    print(
        f"with a sink as fast per row as raw executemany ({bare.operations:.2f} row operations "
        "per event): "
        + ", ".join(f"{bare.at_raw_speed(r.raw_rate):.3f} of raw {r.database}" for r in results)
    )
    for r in results:
        print(
            f"lag {r.database} at {options.rate} events/s ({r.lag_events} events): "
            f"p50={r.lag_p50 * 1000:.1f} ms p99={r.lag_p99 * 1000:.1f} ms"
        )
    for r in results:
        print(f"ratio cdc-{r.database}/raw={r.bridge_rate / r.raw_rate:.3f}")
    return 0
