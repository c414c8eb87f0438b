"""The sink contract, on SQLite and PostgreSQL: every test runs against both adapters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cdc import envelope
from cdc.envelope import Change
from cdc.errors import Origin
from cdc.record import Field, Source
from cdc.sink import SqlSink, create_engine
from common import positions

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
CATEGORIES = Source(
    "legacy",
    "public",
    "categories",
    (Field("id", "int32", optional=False), Field("slug", "string"), Field("name", "string")),
    ("id",),
)


class Topic:
    """Writes Debezium records for one table and parses them back, as the consumer would."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.offset = 0

    def event(
        self,
        op: str,
        row: dict[str, Any] | None,
        lsn: int,
        before: dict[str, Any] | None = None,
        snapshot: str | None = None,
    ) -> Change:
        key_row = row if row is not None else before
        assert key_row is not None
        value = self.source.value_bytes(
            op,
            before,
            None if op == "d" else row,
            lsn=lsn,
            last_commit=lsn,
            ts_ms=1_700_000_000_000,
            snapshot=snapshot or ("true" if op == "r" else "false"),
        )
        origin = Origin(self.source.topic, 0, self.offset)
        self.offset += 1
        parsed = envelope.parse(origin, self.source.key_bytes(key_row), value, "legacy")
        assert isinstance(parsed, Change)
        return parsed


def product(pid: int, name: str = "Lamp", category: int = 1, **extra: Any) -> dict[str, Any]:
    row = {
        "id": pid,
        "name": name,
        "description": f"about {name}",
        "price_cents": 100 * pid,
        "category_id": category,
        "stock": 1,
        "updated_at": "2025-01-01T00:00:00Z",
    }
    return {**row, **extra}


def documents(sink: SqlSink) -> dict[int, tuple[Any, ...]]:
    with sink.engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT product_id, name, description, price_cents, category_slug, category_name"
                " FROM search_documents ORDER BY product_id"
            )
        )
        return {row[0]: tuple(row[1:]) for row in rows}


@pytest.fixture
def categories(sink: SqlSink) -> Topic:
    topic = Topic(CATEGORIES)
    sink.apply([topic.event("r", {"id": 1, "slug": "lighting", "name": "Lighting"}, 10)])
    return topic


def test_upsert_inserts_then_updates(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    outcome = sink.apply([topic.event("c", product(1), 100), topic.event("c", product(2), 101)])
    assert (outcome.applied, outcome.skipped, outcome.rejected) == (2, 0, ())
    sink.apply([topic.event("u", product(1, "Big Lamp"), 102, before=product(1))])
    assert documents(sink) == {
        1: ("Big Lamp", "about Big Lamp", 100, "lighting", "Lighting"),
        2: ("Lamp", "about Lamp", 200, "lighting", "Lighting"),
    }


def test_delete_takes_the_key_from_the_message_key(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100), topic.event("c", product(2), 101)])
    # REPLICA IDENTITY DEFAULT: `before` holds only the key.
    outcome = sink.apply([topic.event("d", None, 102, before={"id": 1})])
    assert outcome.applied == 1
    assert list(documents(sink)) == [2]


def test_truncate_empties_the_table(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100)])
    truncate = topic.event("t", None, 101, before={"id": 0})
    sink.apply([truncate, topic.event("c", product(3), 102)])
    assert list(documents(sink)) == [3]


def test_a_stale_event_is_skipped(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("u", product(1, "New"), 200)])
    outcome = sink.apply([topic.event("u", product(1, "Old"), 150)])
    assert (outcome.applied, outcome.skipped) == (0, 1)
    stale_delete = sink.apply([topic.event("d", None, 180, before={"id": 1})])
    assert stale_delete.skipped == 1
    assert documents(sink)[1][0] == "New"


def test_a_snapshot_read_never_overwrites_a_streamed_change(
    sink: SqlSink, categories: Topic
) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("u", product(1, "Streamed"), 200)])
    # The snapshot marker sorts before every streamed change, whatever the lsn.
    assert sink.apply([topic.event("r", product(1, "Snapshot"), 500)]).skipped == 1
    assert documents(sink)[1][0] == "Streamed"


def test_an_incremental_snapshot_read_replaces_older_streamed_changes(
    sink: SqlSink, categories: Topic
) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1, "Streamed"), 200), topic.event("c", product(2), 201)])
    # Debezium emits a chunk's reads after the streamed changes they supersede.
    read = topic.event("r", product(1, "Read"), 300, snapshot="incremental")
    assert sink.apply([read]).applied == 1
    assert documents(sink)[1][0] == "Read"
    # A change streamed after the read wins, and redelivering the read changes nothing.
    sink.apply([topic.event("u", product(1, "Later"), 301)])
    assert sink.apply([read]).skipped == 1
    assert documents(sink)[1][0] == "Later"


def test_delete_then_reinsert_in_one_batch_leaves_the_row(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100)])
    sink.apply(
        [
            topic.event("d", None, 101, before={"id": 1}),
            topic.event("c", product(1, "Again"), 102),
            topic.event("d", None, 103, before={"id": 2}),
        ]
    )
    assert documents(sink)[1][0] == "Again"


def test_replaying_the_whole_topic_changes_nothing(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    events = [
        topic.event("r", product(1), 50),
        topic.event("r", product(2), 50),
        topic.event("c", product(3), 100),
        topic.event("u", product(1, "Renamed"), 101),
        topic.event("d", None, 102, before={"id": 2}),
        topic.event("u", product(3, price_cents=7), 103),
    ]
    for start in range(0, len(events), 2):
        sink.apply(events[start : start + 2])
    expected = documents(sink)
    for start in range(len(events)):  # every suffix, as redelivery after a crash gives
        sink.apply(events[start:])
        assert documents(sink) == expected


def test_a_toasted_column_keeps_its_value(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1, description="long text"), 100)])
    unchanged = product(1, "Renamed", description="__debezium_unavailable_value")
    sink.apply([topic.event("u", unchanged, 101)])
    assert documents(sink)[1][:2] == ("Renamed", "long text")


def test_a_category_change_updates_its_documents(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100), topic.event("c", product(2, category=2), 101)])
    # Category 2 is not known yet (topics are not ordered together): empty until it comes.
    assert documents(sink)[2][3:] == ("", "")
    sink.apply(
        [
            categories.event("c", {"id": 2, "slug": "garden", "name": "Garden"}, 102),
            categories.event("u", {"id": 1, "slug": "lights", "name": "Lights"}, 103),
        ]
    )
    assert documents(sink)[1][3:] == ("lights", "Lights")
    assert documents(sink)[2][3:] == ("garden", "Garden")


def test_a_constraint_violation_rejects_only_that_event(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    bad = topic.event("c", product(2, name=None), 101)  # name is NOT NULL in the target
    outcome = sink.apply(
        [topic.event("c", product(1), 100), bad, topic.event("c", product(3), 102)]
    )
    assert [e.origin for e in outcome.rejected] == [bad.origin]
    assert "rejected by the database" in outcome.rejected[0].reason
    assert list(documents(sink)) == [1, 3]


def test_positions_are_published_per_source_table(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100), topic.event("c", product(2), 0x1234)])
    published = positions.read(sink.engine, "legacy")
    products = published["public.products"]
    assert (products.topic, products.position) == (
        "legacy.public.products",
        envelope.position(0x1234, 0x1234),
    )
    assert products.source_ts_ms == 1_700_000_000_000
    assert products.applied_at is not None
    # A write committed at or before 0x1234 is in; a later one is not yet.
    assert products.covers(0x1234) and not products.covers(0x1235)
    # The categories came from a snapshot read: commit 0 covers no streamed write.
    assert published["public.categories"].position == envelope.position(0, 10)
    assert not published["public.categories"].covers(1)


def test_no_positions_before_the_bridge_tables_exist(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert positions.read(engine, "legacy") == {}
    finally:
        engine.dispose()


def test_updated_at_arrives_as_a_datetime(sink: SqlSink, categories: Topic) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1, updated_at="2025-03-04T05:06:07.123456Z"), 100)])
    with sink.engine.connect() as connection:
        value = connection.scalar(sa.text("SELECT updated_at FROM search_documents"))
    expected = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    assert value in (expected, "2025-03-04 05:06:07.123456")  # PostgreSQL / SQLite storage


# --- issue 17: values checked against the target, the event's own source, truncates ---------


@pytest.mark.parametrize(
    ("column", "wrong", "reason"),
    [
        ("price_cents", "twelve", "column 'price_cents': expected an integer, got str 'twelve'"),
        ("price_cents", 2**40, "does not fit a 32-bit integer"),
        ("price_cents", True, "expected an integer, got bool True"),
        ("name", "x" * 201, "201 characters do not fit VARCHAR(200)"),
        ("name", "nul\x00byte", "text with a NUL character"),
        ("description", 12, "expected text, got int 12"),
    ],
)
def test_a_value_the_target_cannot_hold_is_rejected_the_same_on_every_database(
    sink: SqlSink, categories: Topic, column: str, wrong: Any, reason: str
) -> None:
    topic = Topic(PRODUCTS)
    bad = topic.event("c", product(1, **{column: wrong}), 100)
    outcome = sink.apply([bad, topic.event("c", product(2), 101)])
    assert [e.origin for e in outcome.rejected] == [bad.origin]
    assert reason in outcome.rejected[0].reason
    assert list(documents(sink)) == [2]  # the rest of the batch is applied


def test_an_infinite_timestamp_is_stored_as_the_latest_datetime(
    sink: SqlSink, categories: Topic
) -> None:
    topic = Topic(PRODUCTS)
    outcome = sink.apply(
        [
            topic.event("c", product(1, updated_at="infinity"), 100),
            topic.event("c", product(2, updated_at="-infinity"), 101),
        ]
    )
    assert outcome.rejected == ()
    with sink.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT product_id, updated_at FROM search_documents"))
        stamps: dict[int, Any] = {row[0]: row[1] for row in rows}
    latest, earliest = (stamps[1], stamps[2])
    if isinstance(latest, str):  # SQLite keeps DATETIME as text
        latest, earliest = datetime.fromisoformat(latest), datetime.fromisoformat(earliest)
    assert latest.replace(tzinfo=None) == datetime.max
    assert earliest.replace(tzinfo=None) == datetime.min


def test_an_event_of_another_table_is_dead_lettered_not_applied(
    sink: SqlSink, categories: Topic
) -> None:
    topic = Topic(PRODUCTS)
    sink.apply([topic.event("c", product(1), 100)])
    elsewhere = Topic(
        Source("legacy", "public", "categories", PRODUCTS.fields, ("id",), db="legacy")
    )
    # A truncate of `categories` arriving on the products topic (a rerouting transform).
    misrouted = elsewhere.event("t", None, 101, before={"id": 0})
    misrouted = Change(
        Origin(PRODUCTS.topic, 0, 99),
        "t",
        None,
        None,
        None,
        misrouted.position,
        None,
        misrouted.table,
    )
    outcome = sink.apply([misrouted])
    assert [e.origin for e in outcome.rejected] == [misrouted.origin]
    assert "its source is table 'public.categories', not public.products" in (
        outcome.rejected[0].reason
    )
    assert list(documents(sink)) == [1]
    assert sink.apply([topic.event("t", None, 102, before={"id": 0})]).truncates == 1
    assert documents(sink) == {}


def test_a_replayed_truncate_leaves_newer_rows_and_stops_older_ones(
    sink: SqlSink, categories: Topic
) -> None:
    topic = Topic(PRODUCTS)
    create = topic.event("c", product(1), 100)
    truncate = topic.event("t", None, 101, before={"id": 0})
    later = topic.event("c", product(2), 102)
    sink.apply([create, truncate, later])
    assert list(documents(sink)) == [2]
    replay = sink.apply([create, truncate])  # a redelivery from before the truncate
    assert (replay.applied, replay.skipped) == (0, 1)
    assert list(documents(sink)) == [2]
