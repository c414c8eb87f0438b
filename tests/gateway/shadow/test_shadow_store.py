"""The shadow store contract, on SQLite and PostgreSQL: every test runs against both adapters."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.shadow import schema
from gateway.shadow.differ import Difference, generalise
from gateway.shadow.records import FieldCount, Latency, Record, RouteSummary
from gateway.shadow.redaction import REDACTED, redact
from gateway.shadow.sql_store import SqlShadowStore
from gateway.shadow.store import create_store

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1_000_000.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shadow' / 'results.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(store_url: str, clock: Clock) -> AsyncIterator[SqlShadowStore]:
    store = create_store(store_url, clock=clock)
    yield store
    await store.close()


def price(i: int, a: str = "9.99", b: str = "10.0") -> Difference:
    return Difference(f"$.results[{i}].price", "value_changed", a, b)


def record(
    at: float, verdict: str = "identical", route: str = "search", **fields: object
) -> Record:
    base = Record(
        at, route, "GET", "/search", 200, 200, "identical", primary_ms=10.0, candidate_ms=12.0
    )
    return replace(base, verdict=verdict, **fields)  # type: ignore[arg-type]


async def test_an_empty_store_summarises_to_nothing(store: SqlShadowStore) -> None:
    assert await store.summary() == []


async def test_round_trip(store: SqlShadowStore) -> None:
    await store.record(
        [
            record(1, "identical", primary_ms=10, candidate_ms=20),
            record(
                2, "different", differences=(price(3), price(4)), primary_ms=30, candidate_ms=40
            ),
            record(
                3,
                "different",
                differences=(price(1, "1", "2"), Difference("status", "status", "200", "500")),
                candidate_status=500,
            ),
            record(4, "noise_only", noisy=(Difference("$.took_ms", "value_changed", "3", "4"),)),
            record(5, "status_only"),
            record(6, "candidate_error", candidate_status=None, candidate_ms=None, error="timeout"),
        ],
        dropped={("search", "shadow_behind"): 1},
    )
    (summary,) = await store.summary()
    assert summary == RouteSummary(
        route="search",
        mirrored=7,
        compared=5,
        identical=1,
        different=2,
        noise_only=1,
        status_only=1,
        candidate_errors=1,
        drops={"shadow_behind": 1},
        top_differences=(
            # two comparisons differ in a price (three rows), the latest example shown
            FieldCount("$.results[*].price", "value_changed", 2, price(1, "1", "2")),
            FieldCount("status", "status", 1, Difference("status", "status", "200", "500")),
        ),
        top_noisy=(
            FieldCount(
                "$.took_ms", "value_changed", 1, Difference("$.took_ms", "value_changed", "3", "4")
            ),
        ),
        primary_ms=Latency(10.0, 30.0),  # 6 samples: ranks 3 and 6 of 10,10,10,10,10,30 sorted
        candidate_ms=Latency(12.0, 40.0),  # 5 samples: ranks 3 and 5 of 12,12,12,20,40
    )
    assert summary.identical_pct == pytest.approx(20.0)
    assert summary.differing_pct == pytest.approx(40.0)


def expected_summary(records: list[Record], top: int = 10) -> RouteSummary:
    """The summary computed here from the records themselves, independently of the store."""
    verdicts = Counter(r.verdict for r in records)
    fields: dict[tuple[bool, str, str], set[int]] = {}
    examples: dict[tuple[bool, str, str], Difference] = {}
    for n, r in enumerate(records):
        for noisy, group in ((False, r.differences), (True, r.noisy)):
            for d in group:
                key = (noisy, generalise(d.path), d.kind)
                fields.setdefault(key, set()).add(n)
                examples[key] = d

    def top_fields(noisy: bool) -> tuple[FieldCount, ...]:
        counts = [
            (path, kind, len(ns)) for (flag, path, kind), ns in fields.items() if flag is noisy
        ]
        counts.sort(key=lambda c: (-c[2], c[0], c[1]))
        return tuple(FieldCount(p, k, n, examples[(noisy, p, k)]) for p, k, n in counts[:top])

    def percentiles(values: list[float]) -> Latency:
        ranked = sorted(values)
        return Latency(*(ranked[math.ceil(p / 100 * len(ranked)) - 1] for p in (50, 99)))

    compared = sum(verdicts[v] for v in ("identical", "different", "noise_only", "status_only"))
    return RouteSummary(
        route=records[0].route,
        mirrored=len(records),
        compared=compared,
        identical=verdicts["identical"],
        different=verdicts["different"],
        noise_only=verdicts["noise_only"],
        status_only=verdicts["status_only"],
        candidate_errors=verdicts["candidate_error"],
        drops={},
        top_differences=top_fields(False),
        top_noisy=top_fields(True),
        primary_ms=percentiles([r.primary_ms for r in records]),
        candidate_ms=percentiles([r.candidate_ms for r in records if r.candidate_ms is not None]),
    )


def random_records(rnd: random.Random, route: str, count: int, start: float) -> list[Record]:
    fields = [f"$.f{i}" for i in range(14)] + ["$.results[{}].price", "$.results[{}].name"]
    records = []
    for n in range(count):
        verdict = rnd.choice(
            ["identical"] * 5 + ["different"] * 3 + ["noise_only", "status_only", "candidate_error"]
        )
        differences: tuple[Difference, ...] = ()
        noisy: tuple[Difference, ...] = ()
        if verdict == "different":
            picks = rnd.sample(fields, rnd.randint(1, 3))
            differences = tuple(
                Difference(
                    p.format(rnd.randint(0, 9)),
                    rnd.choice(["value_changed", "missing_field"]),
                    str(n),
                    None,
                )
                for p in picks
            )
        if verdict in ("different", "noise_only"):
            noisy = tuple(
                Difference(f"$.results[{i}].served_at", "value_changed", f'"{n}"', f'"{n + 1}"')
                for i in range(rnd.randint(1, 3))
            )
        failed = verdict == "candidate_error"
        records.append(
            Record(
                at=start + n,
                route=route,
                method="GET",
                path="/search",
                primary_status=200,
                candidate_status=None if failed else 200,
                verdict=verdict,  # type: ignore[arg-type]
                differences=differences,
                noisy=noisy,
                primary_ms=round(rnd.uniform(1, 50), 3),
                candidate_ms=None if failed else round(rnd.uniform(1, 500), 3),
            )
        )
    return records


async def test_the_summary_matches_the_recorded_comparisons_exactly(store: SqlShadowStore) -> None:
    rnd = random.Random(4)
    search = random_records(rnd, "search", 400, 0)
    orders = random_records(rnd, "orders", 150, 0)
    for n in range(11):  # batches of uneven sizes, routes interleaved
        await store.record(search[n * 37 : n * 37 + 37] + orders[n * 14 : n * 14 + 14])
    summaries = await store.summary()
    assert summaries == [expected_summary(orders), expected_summary(search)]
    assert len(summaries[1].top_differences) == 10


async def test_route_and_since_filters(store: SqlShadowStore) -> None:
    rnd = random.Random(5)
    search = random_records(rnd, "search", 60, 100)
    orders = random_records(rnd, "orders", 40, 100)
    await store.record(search + orders)
    assert await store.summary(route="orders") == [expected_summary(orders)]
    assert await store.summary(since=130) == [
        expected_summary(orders[30:]),
        expected_summary(search[30:]),
    ]
    assert await store.summary(route="search", since=150) == [expected_summary(search[50:])]
    assert await store.summary(route="nope") == []
    assert await store.summary(since=1e9) == []


async def test_the_top_list_is_cut_and_ties_go_by_path_then_kind(
    store_url: str, clock: Clock
) -> None:
    store = create_store(store_url, clock=clock, top=3)
    try:
        kinds = [
            Difference("$.b", "value_changed", "1", "2"),
            Difference("$.a", "missing_field", "1", None),
            Difference("$.a", "extra_field", None, "1"),
            Difference("$.c", "value_changed", "1", "2"),
        ]
        await store.record(
            [
                record(1, "different", differences=tuple(kinds)),
                record(2, "different", differences=(kinds[3],)),
            ]
        )
        (summary,) = await store.summary()
        assert [(f.path, f.kind, f.count) for f in summary.top_differences] == [
            ("$.c", "value_changed", 2),
            ("$.a", "extra_field", 1),
            ("$.a", "missing_field", 1),
        ]
    finally:
        await store.close()


async def test_retention_by_age(store: SqlShadowStore, clock: Clock) -> None:
    records = random_records(random.Random(6), "search", 100, clock.now - 100)
    await store.record(records)
    assert await store.retain(max_rows=1000, max_age=40.5) == 60
    assert await store.summary() == [expected_summary(records[60:])]
    clock.now += 1000
    assert await store.retain(max_rows=1000, max_age=3600) == 0


async def test_retention_by_count_keeps_the_newest(store: SqlShadowStore) -> None:
    records = random_records(random.Random(7), "search", 100, 0)
    await store.record(records[:50])
    await store.record(records[50:])
    assert await store.retain(max_rows=30, max_age=1e12) == 70
    assert await store.summary() == [expected_summary(records[70:])]
    assert await store.retain(max_rows=30, max_age=1e12) == 0
    assert await store.retain(max_rows=0, max_age=1e12) == 30
    assert await store.summary() == []


def drops(summaries: list[RouteSummary]) -> list[tuple[str, int, dict[str, int]]]:
    return [(s.route, s.dropped, dict(s.drops)) for s in summaries]


async def test_drops_are_tallied_per_route_and_reason_and_filtered_and_retained_with_the_rows(
    store: SqlShadowStore, clock: Clock
) -> None:
    clock.now = 100
    await store.record(
        [record(100)],
        dropped={
            ("search", "shadow_behind"): 3,
            ("search", "gateway_busy"): 1,
            ("orders", "body_too_large"): 2,
        },
    )
    clock.now = 200
    await store.record(
        [record(200)], dropped={("search", "shadow_behind"): 4, ("unused", "worker_down"): 0}
    )
    clock.now = 300
    await store.record([], dropped={("orders", "body_too_large"): 5, ("orders", "worker_down"): 1})
    assert [(s.route, s.mirrored, s.compared) for s in await store.summary()] == [
        ("orders", 8, 0),  # a route with nothing but drops is reported too
        ("search", 10, 2),
    ]
    assert drops(await store.summary()) == [
        ("orders", 8, {"body_too_large": 7, "worker_down": 1}),
        ("search", 8, {"gateway_busy": 1, "shadow_behind": 7}),  # only the reasons with a count
    ]
    assert drops(await store.summary(since=150)) == [
        ("orders", 6, {"body_too_large": 5, "worker_down": 1}),
        ("search", 4, {"shadow_behind": 4}),
    ]
    assert drops(await store.summary(route="search", since=150)) == [
        ("search", 4, {"shadow_behind": 4})
    ]
    # by count: the tallies older than the oldest kept comparison go with the rows
    assert await store.retain(max_rows=1, max_age=1e12) == 1
    assert drops(await store.summary()) == [
        ("orders", 6, {"body_too_large": 5, "worker_down": 1}),
        ("search", 4, {"shadow_behind": 4}),
    ]
    clock.now = 1000  # by age: everything older than 350
    assert await store.retain(max_rows=1000, max_age=650) == 1
    assert await store.summary() == []


# The shadow_drops table as the store made it before drops kept a reason: this DDL stays as it
# was, whatever the store's own definition becomes.
OLD_DROPS = sa.Table(
    "shadow_drops",
    sa.MetaData(),
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("route", sa.String(200), nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Index("ix_shadow_drops_route_at", "route", "at"),
)


def make_old_store(url: str, tallies: list[tuple[float, str, int]]) -> None:
    """The three tables as an earlier version made them, with `tallies` (at, route, count)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(str(parsed.database)).parent.mkdir(parents=True)
    engine = sa.create_engine(parsed)
    try:
        with engine.begin() as connection:
            old = sa.MetaData()
            for table in (schema.comparisons, schema.differences):
                table.to_metadata(old)
            old.create_all(connection)
            OLD_DROPS.create(connection)
    finally:
        engine.dispose()
    insert_as_before(url, tallies)


def insert_as_before(url: str, tallies: list[tuple[float, str, int]]) -> None:
    """Drop tallies (at, route, count) inserted as an earlier version does: with no reason."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(OLD_DROPS),
                [{"at": at, "route": route, "count": n} for at, route, n in tallies],
            )
    finally:
        engine.dispose()


def drop_columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {c["name"] for c in sa.inspect(connection).get_columns("shadow_drops")}
    finally:
        engine.dispose()


async def test_an_old_drops_table_is_upgraded_and_its_tallies_count_as_unknown(
    store_url: str, clock: Clock
) -> None:
    make_old_store(store_url, [(100, "search", 3), (200, "search", 4), (300, "orders", 5)])
    assert "reason" not in drop_columns(store_url)
    store = create_store(store_url, clock=clock)
    try:
        assert drops(await store.summary()) == [
            ("orders", 5, {"unknown": 5}),
            ("search", 7, {"unknown": 7}),
        ]
        assert "reason" in drop_columns(store_url)
        clock.now = 400
        await store.record([record(400)], dropped={("search", "gateway_busy"): 2})
        # a replica still on the earlier code, in a rolling update, inserts without a reason
        insert_as_before(store_url, [(450, "search", 1)])
        assert drops(await store.summary()) == [
            ("orders", 5, {"unknown": 5}),
            ("search", 10, {"gateway_busy": 2, "unknown": 8}),
        ]
        assert drops(await store.summary(since=250)) == [
            ("orders", 5, {"unknown": 5}),
            ("search", 3, {"gateway_busy": 2, "unknown": 1}),
        ]
        clock.now = 1000  # retention by age takes the old rows as it takes the new
        assert await store.retain(max_rows=1000, max_age=750) == 0
        assert drops(await store.summary()) == [
            ("orders", 5, {"unknown": 5}),
            ("search", 3, {"gateway_busy": 2, "unknown": 1}),
        ]
    finally:
        await store.close()
    # the upgrade is done once: a store started afterwards finds the column and keeps the rows
    again = create_store(store_url, clock=clock)
    try:
        assert drops(await again.summary(route="orders")) == [("orders", 5, {"unknown": 5})]
    finally:
        await again.close()


async def test_a_new_table_takes_an_earlier_versions_inserts_as_unknown(
    store: SqlShadowStore, store_url: str
) -> None:
    await store.record([], dropped={("search", "worker_down"): 2})  # this version makes it
    insert_as_before(store_url, [(store.clock(), "search", 1)])
    assert drops(await store.summary()) == [("search", 3, {"unknown": 1, "worker_down": 2})]


async def test_replicas_starting_at_once_upgrade_an_old_table_once(
    store_url: str, clock: Clock
) -> None:
    make_old_store(store_url, [(100, "search", 3)])
    replicas = [create_store(store_url, clock=clock) for _ in range(4)]
    try:
        # each store in a thread of its own, all at first use together
        summaries = await asyncio.gather(*(replica.summary() for replica in replicas))
        assert [drops(s) for s in summaries] == [[("search", 3, {"unknown": 3})]] * 4
        await asyncio.gather(
            *(replica.record([], dropped={("search", "shadow_behind"): 1}) for replica in replicas)
        )
        assert drops(await replicas[0].summary()) == [
            ("search", 7, {"shadow_behind": 4, "unknown": 3})
        ]
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.parametrize(("max_rows", "max_age"), [(-1, 10.0), (10, -1.0), (10, float("nan"))])
async def test_retention_limits_are_checked(
    store: SqlShadowStore, max_rows: int, max_age: float
) -> None:
    with pytest.raises(ValueError, match="retention needs"):
        await store.retain(max_rows, max_age)


def without_examples(summary: RouteSummary) -> RouteSummary:
    blank = Difference("", "", None, None)
    return replace(
        summary,
        top_differences=tuple(replace(f, example=blank) for f in summary.top_differences),
        top_noisy=tuple(replace(f, example=blank) for f in summary.top_noisy),
    )


async def test_concurrent_record_calls(store: SqlShadowStore) -> None:
    records = random_records(random.Random(8), "search", 600, 0)
    await asyncio.gather(*(store.record(records[n : n + 20]) for n in range(0, 600, 20)))
    (summary,) = await store.summary()
    # Which batch commits last is up to the scheduler, and so is each field's latest example.
    assert without_examples(summary) == without_examples(expected_summary(records))
    recorded = {d for r in records for d in (*r.differences, *r.noisy)}
    for field in (*summary.top_differences, *summary.top_noisy):
        assert field.example in recorded
        assert (generalise(field.example.path), field.example.kind) == (field.path, field.kind)


async def test_sensitive_headers_are_never_stored(store: SqlShadowStore) -> None:
    cookie = Difference("headers.set-cookie", "header", "sid=secret1", "sid=secret2")
    await store.record([record(1, "different", differences=(cookie,))])
    (summary,) = await store.summary()
    assert summary.top_differences[0].example == Difference(
        "headers.set-cookie", "header", REDACTED, REDACTED
    )


async def test_long_errors_and_nothing_to_record(store: SqlShadowStore) -> None:
    await store.record([])
    await store.record([record(1, "candidate_error", error="x" * 10_000, candidate_ms=None)])
    (summary,) = await store.summary()
    assert summary.candidate_errors == 1
    assert summary.candidate_ms == Latency(None, None)


async def test_a_new_store_on_the_same_database_sees_the_records(
    store_url: str, clock: Clock
) -> None:
    first = create_store(store_url, clock=clock)
    await first.record([record(1)])
    await first.close()
    second = create_store(store_url, clock=clock)
    try:
        assert [s.mirrored for s in await second.summary()] == [1]
    finally:
        await second.close()


async def test_an_in_memory_sqlite_store() -> None:
    store = create_store("sqlite://")
    try:
        await asyncio.gather(store.record([record(1)]), store.record([record(2)]))
        assert [s.mirrored for s in await store.summary()] == [2]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost", "use sqlite:///path.db or postgresql"),
        ("not a url", "not a database URL"),
    ],
)
def test_unsupported_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_store(url)


# --- redaction (pure) ----------------------------------------------------------------------


def redacted(*differences: Difference, paths: tuple[str, ...] = ()) -> list[Difference]:
    return list(redact(record(1, "different", differences=differences), paths).differences)


def test_sensitive_headers_are_redacted_others_kept() -> None:
    assert redacted(
        Difference("headers.authorization", "header", "Bearer a", None),
        Difference("headers.content-type", "header", "text/html", "application/json"),
    ) == [
        Difference("headers.authorization", "header", REDACTED, None),
        Difference("headers.content-type", "header", "text/html", "application/json"),
    ]


def test_configured_paths_are_redacted() -> None:
    paths = ("$.email", "$.users[*].phone")
    assert redacted(
        Difference("$.email", "value_changed", '"a@example.com"', '"b@example.com"'),
        Difference("$.email", "missing_field", '"a@example.com"', None),
        Difference("$.users[2].phone", "value_changed", '"555"', '"556"'),
        Difference("$.users[2].phone.ext", "value_changed", "1", "2"),
        Difference("$.users[2].name", "value_changed", '"Ann"', '"Anne"'),
        paths=paths,
    ) == [
        Difference("$.email", "value_changed", REDACTED, REDACTED),
        Difference("$.email", "missing_field", REDACTED, None),
        Difference("$.users[2].phone", "value_changed", REDACTED, REDACTED),
        Difference("$.users[2].phone.ext", "value_changed", REDACTED, REDACTED),
        Difference("$.users[2].name", "value_changed", '"Ann"', '"Anne"'),
    ]


def test_values_that_contain_a_redacted_path_are_masked_inside() -> None:
    paths = ("$.users[*].email",)
    assert redacted(
        Difference("$.users", "array_length", "1", "2"),
        Difference("$.users[0]", "missing_field", '{"email":"a@example.com","name":"Ann"}', None),
        Difference("$", "type_changed", '{"users":[{"email":"a@exam…', "[]"),
        paths=paths,
    ) == [
        Difference("$.users", "array_length", "1", "2"),
        Difference("$.users[0]", "missing_field", '{"email":"[redacted]","name":"Ann"}', None),
        Difference("$", "type_changed", REDACTED, "[]"),  # cut short: not shown at all
    ]


def test_noisy_differences_are_redacted_too() -> None:
    noisy = (Difference("$.email", "value_changed", '"a"', '"b"'),)
    result = redact(record(1, "noise_only", noisy=noisy), ("$.email",))
    assert result.noisy == (Difference("$.email", "value_changed", REDACTED, REDACTED),)


def test_a_bad_redaction_path_is_an_error() -> None:
    with pytest.raises(ValueError, match="must start with"):
        redact(record(1), ("email",))
