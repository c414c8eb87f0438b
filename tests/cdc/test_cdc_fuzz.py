"""A fuzz of the parser, the planner and the sink through `Bridge.handle` (issue 17).

Valid Debezium messages (with and without schemas, every op, Kafka tombstones, heartbeats,
transaction boundaries) are mutated (a value anywhere in the document replaced by an
awkward one or removed, or the bytes cut or altered) and handed to the bridge in batches.
`handle` must never raise, and every message must end counted exactly once: applied,
skipped, ignored, truncated, seen as a tombstone/heartbeat/transaction, or dead-lettered
with Kafka Connect's headers and a reason.

The bridge's Kafka clients are fakes that record what it stores and produces: the code
under test is everything between the message and the database, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc import mapping
from cdc.consumer import Bridge, Options
from cdc.record import Source
from cdc.sink import SqlSink
from tests.cdc.test_cdc_sink import CATEGORIES, PRODUCTS, product


class FakeMessage:
    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._offset, self._key, self._value = topic, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self) -> None:
        self.stored: list[list[Any]] = []  # one list per store_offsets call

    def store_offsets(self, offsets: list[Any]) -> None:
        self.stored.append(offsets)

    def get_watermark_offsets(self, _partition: Any, cached: bool = False) -> tuple[int, int]:
        return 0, -1


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []
        self._callbacks: list[Any] = []

    def produce(self, topic: str, **message: Any) -> None:
        self.produced.append({"topic": topic, **message})
        self._callbacks.append(message["on_delivery"])

    def flush(self, _timeout: float) -> int:
        for callback in self._callbacks:
            callback(None, None)
        self._callbacks.clear()
        return 0


def _messages(source: Source) -> list[tuple[str, bytes | None, bytes | None]]:
    topic = source.topic
    row = product(7) if source is not CATEGORIES else {"id": 7, "slug": "s", "name": "n"}
    if source.table == "products":
        row = {**row, "updated_at": "2025-01-01T00:00:00Z"}
    key = source.key_bytes(row)
    stamp = {"last_commit": 5000, "ts_ms": 1_700_000_000_000}
    return [
        (topic, key, source.value_bytes("c", None, row, lsn=5001, **stamp)),
        (topic, key, source.value_bytes("u", row, row, lsn=5002, **stamp)),
        (topic, key, source.value_bytes("r", None, row, lsn=5003, snapshot="true", **stamp)),
        (topic, key, source.value_bytes("d", row, None, lsn=5004, **stamp)),
        (topic, key, None),
        (topic, None, source.value_bytes("t", None, None, lsn=5005, **stamp)),
    ]


SCHEMALESS = Source(
    PRODUCTS.prefix, PRODUCTS.schema, PRODUCTS.table, PRODUCTS.fields, ("id",), with_schemas=False
)
VALID: list[tuple[str, bytes | None, bytes | None]] = [
    *_messages(PRODUCTS),
    *_messages(SCHEMALESS),
    *_messages(CATEGORIES),
    ("__debezium-heartbeat.legacy", None, json.dumps({"ts_ms": 1}).encode()),
    (
        "legacy.transaction",
        json.dumps({"id": "571:53195829"}).encode(),
        json.dumps({"status": "BEGIN", "id": "571:53195829", "ts_ms": 1}).encode(),
    ),
]

AWKWARD = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 2**31, -(2**63) - 1, 2**64, 10**30, 9223372036825200000]),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "",
            "NaN",
            "Infinity",
            "infinity",
            "-infinity",
            "twelve",
            "\x00",
            "__debezium_unavailable_value",
        ]
    ),
    st.text(max_size=20),
    st.text(min_size=300, max_size=400),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["c", "u", "d", "r", "t", "m", "x", "public", "categories", "products"]),
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(document, dict):
        for name, value in document.items():
            yield (*prefix, name)
            yield from _paths(value, (*prefix, name))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated(draw: st.DrawFn, data: bytes | None) -> bytes | None:
    if data is None:
        return draw(st.sampled_from([None, b"", b"null", b"{}"]))
    how = draw(st.sampled_from(["replace", "replace", "replace", "remove", "bytes", "none"]))
    if how == "none":
        return data
    if how == "bytes":
        cut = draw(st.integers(0, len(data)))
        return data[:cut] + draw(st.binary(max_size=4)) + data[cut + draw(st.integers(0, 3)) :]
    document = json.loads(data)
    paths = list(_paths(document))
    if not paths:
        return data
    path = draw(st.sampled_from(paths))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if how == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(AWKWARD)
    return json.dumps(document).encode()


@st.composite
def batches(draw: st.DrawFn) -> list[FakeMessage]:
    chosen = draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=6))
    messages = []
    for offset, (topic, key, value) in enumerate(chosen):
        if draw(st.booleans()):
            key, value = draw(mutated(key)), draw(mutated(value))
        messages.append(FakeMessage(topic, offset, key, value))
    return messages


@pytest.fixture
def bridge(sink: SqlSink) -> Bridge:
    running = Bridge(mapping.load(), sink, Options("127.0.0.1:9"))
    # The loop's Kafka clients, as `run` would have made them.
    running._consumer = cast(Any, FakeConsumer())
    running._producer = cast(Any, FakeProducer())
    return running


def _accounted(bridge: Bridge) -> int:
    return sum(
        t.applied
        + t.skipped
        + t.ignored
        + t.truncates
        + t.dead_lettered
        + t.tombstones
        + t.heartbeats
        + t.transactions
        for t in bridge.metrics.topics.values()
    )


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=batches())
def test_every_mutated_message_is_applied_skipped_or_dead_lettered(
    bridge: Bridge, messages: list[FakeMessage]
) -> None:
    producer = cast(FakeProducer, bridge._producer)
    consumer = cast(FakeConsumer, bridge._consumer)
    before, produced = _accounted(bridge), len(producer.produced)
    bridge.handle(cast(Any, messages))
    assert _accounted(bridge) - before == len(messages)
    # Committed past every message, each topic's partition to its last offset + 1.
    stored = {(tp.topic, tp.partition): tp.offset for tp in consumer.stored[-1]}
    assert stored == {(m.topic(), 0): m.offset() + 1 for m in messages}
    for dead in producer.produced[produced:]:
        headers = dict(dead["headers"])
        assert dead["topic"] == "strangler.cdc.dlq"
        assert headers["__connect.errors.topic"].decode() in {m.topic() for m in messages}
        assert headers["__connect.errors.exception.message"]
        assert int(headers["__connect.errors.offset"]) in {m.offset() for m in messages}
