"""Fixture tests of the envelope parser, in the Debezium PostgreSQL connector's documented format.

The fixtures follow the connector's documentation ("Data change events", "Data type mappings",
"Transaction metadata", "Logical decoding message events") and the ExtractNewRecordState SMT,
as Kafka Connect's JsonConverter writes them with schemas (`{"schema", "payload"}`) and
without (the bare payload), for the message key and the message value.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from cdc import batch, envelope, mapping
from cdc.envelope import Change, Heartbeat, Tombstone, TransactionBoundary
from cdc.errors import EventError, Origin
from cdc.values import DECLARED, TOAST_PLACEHOLDER, UNAVAILABLE, decode_row

PREFIX = "legacy"
TOPIC = "legacy.public.products"
ORIGIN = Origin(TOPIC, 2, 7)
TOAST_BYTES_B64 = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="  # base64 of the placeholder

# --- schemas, as JsonConverter writes them -------------------------------------------------

KEY_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [{"type": "int32", "optional": False, "default": 0, "field": "id"}],
    "optional": False,
    "name": "legacy.public.products.Key",
}

ROW_FIELDS: list[dict[str, Any]] = [
    {"type": "int32", "optional": False, "default": 0, "field": "id"},
    {"type": "string", "optional": False, "field": "name"},
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {
        "type": "struct",
        "fields": [
            {"type": "int32", "optional": False, "field": "scale"},
            {"type": "bytes", "optional": False, "field": "value"},
        ],
        "optional": True,
        "name": "io.debezium.data.VariableScaleDecimal",
        "version": 1,
        "doc": "Variable scaled decimal",
        "field": "weight",
    },
    {
        "type": "int32",
        "optional": True,
        "name": "io.debezium.time.Date",
        "version": 1,
        "field": "released",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.Timestamp",
        "version": 1,
        "field": "created_ms",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTimestamp",
        "version": 1,
        "field": "created_us",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
        "version": 1,
        "field": "updated_at",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTime",
        "version": 1,
        "field": "opens_at",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Uuid",
        "version": 1,
        "field": "uid",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Json",
        "version": 1,
        "field": "attrs",
    },
    {"type": "string", "optional": True, "field": "description"},
    {"type": "bytes", "optional": True, "field": "photo"},
]


def _row_schema(field: str) -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": ROW_FIELDS,
        "optional": True,
        "name": "legacy.public.products.Value",
        "field": field,
    }


SOURCE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
            },
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "field": "source",
}

VALUE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        _row_schema("before"),
        _row_schema("after"),
        SOURCE_SCHEMA,
        {
            "type": "struct",
            "fields": [
                {"type": "string", "optional": False, "field": "id"},
                {"type": "int64", "optional": False, "field": "total_order"},
                {"type": "int64", "optional": False, "field": "data_collection_order"},
            ],
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        },
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
    ],
    "optional": False,
    "name": "legacy.public.products.Envelope",
    "version": 2,
}

# --- payloads -------------------------------------------------------------------------------

# One row, as the connector encodes each column (decimal.handling.mode=precise,
# time.precision.mode=adaptive_time_microseconds), and the values it decodes to.
ROW: dict[str, Any] = {
    "id": 1,
    "name": "Lamp",
    "price": "BNI=",  # unscaled 1234 = 0x04D2, big-endian; scale "2"
    "weight": {"scale": 3, "value": "MDk="},  # unscaled 12345 = 0x3039
    "released": 19782,  # days since 1970-01-01
    "created_ms": 1709210096789,
    "created_us": 1709210096789012,
    "updated_at": "2024-02-29T12:34:56.789012Z",
    "opens_at": 34200000000,  # µs since midnight: 09:30
    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "attrs": '{"color": "red", "sizes": [1, 2]}',
    "description": "A lamp",
    "photo": "iVBORw==",
}
DECODED: dict[str, Any] = {
    "id": 1,
    "name": "Lamp",
    "price": Decimal("12.34"),
    "weight": Decimal("12.345"),
    "released": date(2024, 2, 29),
    "created_ms": datetime(2024, 2, 29, 12, 34, 56, 789000),  # `timestamp`: no zone
    "created_us": datetime(2024, 2, 29, 12, 34, 56, 789012),
    "updated_at": datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=UTC),
    "opens_at": time(9, 30),
    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "attrs": {"color": "red", "sizes": [1, 2]},
    "description": "A lamp",
    "photo": b"\x89PNG",
}

SEQUENCE = '["24023119","24023128"]'  # ["<lastCommitLsn>", "<lsn>"], a JSON array in a string
STREAMED_POSITION = f"{24023119:016x}/{24023128:016x}"


def source(**overrides: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "version": "2.7.3.Final",
        "connector": "postgresql",
        "name": "legacy",
        "ts_ms": 1709210096789,
        "snapshot": "false",
        "db": "legacy",
        "sequence": SEQUENCE,
        "ts_us": 1709210096789012,
        "ts_ns": 1709210096789012000,
        "schema": "public",
        "table": "products",
        "txId": 555,
        "lsn": 24023128,
        "xmin": None,
    }
    block.update(overrides)
    return block


def value(op: str, before: Any = None, after: Any = None, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": source(),
        "transaction": None,
        "op": op,
        "ts_ms": 1709210096900,
        "ts_us": 1709210096900123,
        "ts_ns": 1709210096900123000,
    }
    payload.update(overrides)
    return payload


def with_schema(schema: dict[str, Any], payload: Any) -> dict[str, Any]:
    return {"schema": schema, "payload": payload}


def raw(document: Any) -> bytes:
    return json.dumps(document).encode()


def parse(key: Any, val: Any, topic: str = TOPIC, *, encoded: bool = False) -> envelope.Event:
    origin = Origin(topic, 2, 7)
    if not encoded:
        key = None if key is None else raw(key)
        val = None if val is None else raw(val)
    return envelope.parse(origin, key, val, PREFIX)


def change(key: Any, val: Any, topic: str = TOPIC) -> Change:
    event = parse(key, val, topic)
    assert isinstance(event, Change)
    return event


KEY_WITH_SCHEMA = with_schema(KEY_SCHEMA, {"id": 1})
KEY_BARE = {"id": 1}

# --- create, with and without schemas ---------------------------------------------------------


def test_create_with_schemas_decodes_every_logical_type() -> None:
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    assert event == Change(
        ORIGIN, "c", {"id": 1}, None, DECODED, STREAMED_POSITION, 1709210096789, "public.products"
    )
    # Exactly the declared scale, not just an equal number.
    assert str(event.after["price"]) == "12.34"  # type: ignore[index]
    assert str(event.after["weight"]) == "12.345"  # type: ignore[index]
    assert event.after["updated_at"].utcoffset() == timedelta(0)  # type: ignore[index]
    assert event.after["created_us"].tzinfo is None  # type: ignore[index]


def test_create_without_schemas_passes_json_values_through() -> None:
    event = change(KEY_BARE, value("c", after=ROW))
    assert event == Change(
        ORIGIN,
        "c",
        {"id": 1},
        None,
        ROW,
        STREAMED_POSITION,
        1709210096789,
        "public.products",
        schemaless=True,
    )


def test_schemaless_variable_scale_decimal_is_decoded_by_its_declared_type() -> None:
    # Without schemas a numeric column of no fixed scale stays a {scale, value} struct; the
    # mapping's `type: decimal` makes a Decimal of it, never a dict for the database.
    # (A fixed-scale Decimal needs its schema's scale: here decimal.handling.mode=string.)
    event = change(KEY_BARE, value("c", after={**ROW, "price": "12.34"}))
    upsert = batch.operation(event, DECIMALS.tables[0])
    assert isinstance(upsert, batch.Upsert)
    assert upsert.row == {"id": 1, "weight": Decimal("12.345"), "price": Decimal("12.34")}
    assert str(upsert.row["weight"]) == "12.345"


def test_declared_types_leave_values_decoded_from_a_schema_alone() -> None:
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    upsert = batch.operation(event, DECIMALS.tables[0])
    assert isinstance(upsert, batch.Upsert)
    assert upsert.row["weight"] == Decimal("12.345")
    # The schema said Decimal(scale 2) for the bytes "BNI="; the declared type is not asked.
    assert upsert.row["price"] == Decimal("12.34")


def test_schemaless_key_with_schema_value_and_the_reverse() -> None:
    a = change(KEY_BARE, with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    b = change(KEY_WITH_SCHEMA, value("c", after=ROW))
    assert a.key == b.key == {"id": 1}
    assert a.after == DECODED
    assert b.after == ROW


# --- update, snapshot read, truncate, logical message ----------------------------------------


def test_update_with_replica_identity_default_has_no_before() -> None:
    after = {**ROW, "name": "Desk lamp"}
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("u", after=after)))
    assert event.op == "u"
    assert event.before is None
    assert event.after == {**DECODED, "name": "Desk lamp"}
    assert event.position == STREAMED_POSITION


def test_update_with_replica_identity_full_decodes_before_too() -> None:
    after = {**ROW, "price": "+y4="}  # -1234, two's complement 0xFB2E
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("u", before=ROW, after=after)))
    assert event.before == DECODED
    assert event.after is not None
    assert event.after["price"] == Decimal("-12.34")
    assert str(event.after["price"]) == "-12.34"


@pytest.mark.parametrize(
    "snapshot", ["true", "first", "first_in_data_collection", "last_in_data_collection", "last"]
)
def test_snapshot_read_gets_the_snapshot_marker(snapshot: str) -> None:
    payload = value(
        "r",
        after=ROW,
        source=source(snapshot=snapshot, sequence='[null,"23853752"]', lsn=23853752, txId=551),
    )
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, payload))
    assert event.op == "r"
    assert event.before is None
    assert event.after == DECODED
    assert event.position == f"{0:016x}/{23853752:016x}"
    # A snapshot read sorts before every streamed change of the same row.
    assert event.position < STREAMED_POSITION


def test_incremental_snapshot_read_keeps_its_stream_position() -> None:
    # Debezium emits an incremental chunk's reads between streamed changes, after dropping
    # the reads of rows that changed meanwhile: each is the row's state at that point of
    # the stream, so it is ordered like a streamed change, not before all of them.
    payload = value("r", after=ROW, source=source(snapshot="incremental"))
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, payload))
    assert event.op == "r"
    assert event.position == STREAMED_POSITION
    older = f"{24023119:016x}/{24023100:016x}"  # a change streamed before the read
    assert older < event.position


def test_flattened_incremental_read_keeps_its_lsn() -> None:
    flat = {**ROW, "__op": "r", "__lsn": 24023128, "__source_snapshot": "incremental"}
    assert change(KEY_BARE, flat).position == f"{24023128:016x}/{24023128:016x}"
    initial = {**ROW, "__op": "r", "__lsn": 24023128, "__source_snapshot": "true"}
    assert change(KEY_BARE, initial).position == f"{0:016x}/{24023128:016x}"


def test_truncate_has_no_key_and_no_rows() -> None:
    # A truncate concerns the whole table: null key, null before and after.
    payload = value("t", source=source(sequence='["24023119","24023200"]', lsn=24023200))
    event = change(None, with_schema(VALUE_SCHEMA, payload))
    assert event == Change(
        ORIGIN,
        "t",
        None,
        None,
        None,
        f"{24023119:016x}/{24023200:016x}",
        1709210096789,
        "public.products",
    )


MESSAGE_VALUE: dict[str, Any] = {
    "op": "m",
    "ts_ms": 1709210096900,
    "source": source(
        schema="",
        table="",
        snapshot="false",
        txId=562,
        lsn=24023300,
        sequence='["24023119","24023300"]',
    ),
    "message": {"prefix": "audit", "content": "aGVsbG8="},
}


@pytest.mark.parametrize("topic", ["legacy.message", TOPIC])
def test_logical_decoding_message_parses_without_rows(topic: str) -> None:
    # Debezium writes them to <topic.prefix>.message; key {"prefix": ...}, no before/after.
    event = change({"prefix": "audit"}, MESSAGE_VALUE, topic)
    assert event.op == "m"
    assert event.key == {"prefix": "audit"}
    assert event.before is None and event.after is None
    assert event.table is None
    assert event.position == f"{24023119:016x}/{24023300:016x}"


def products_mapping(columns: str) -> mapping.Mapping:
    return mapping.parse(
        b"topic_prefix: legacy\ntables:\n  - topic: legacy.public.products\n"
        b"    target: products\n    key: [id]\n    columns:\n" + columns.encode()
    )


MAPPING = products_mapping(
    "      id: id\n      name: name\n      description: description\n"
    "      photo: {from: photo, type: bytes}\n"
)
DECIMALS = products_mapping(
    "      id: id\n      weight: {from: weight, type: decimal}\n"
    "      price: {from: price, type: decimal}\n"
)


def test_logical_message_is_ignored_and_counted() -> None:
    message = change({"prefix": "audit"}, MESSAGE_VALUE)
    created = change(KEY_BARE, value("c", after=ROW))
    plan = batch.plan([message, created], MAPPING)
    assert plan.ignored == {TOPIC: 1}
    assert plan.tables["products"].events == 1


# --- delete, tombstone -------------------------------------------------------------------------


def test_delete_with_key_only_before_then_tombstone() -> None:
    # REPLICA IDENTITY DEFAULT: `before` holds the primary key, the other columns null.
    before = dict.fromkeys(ROW) | {"id": 1, "name": ""}
    delete = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("d", before=before)))
    assert delete.op == "d"
    assert delete.key == {"id": 1}
    assert delete.before == before
    assert delete.after is None
    tombstone = parse(KEY_WITH_SCHEMA, None)
    assert tombstone == Tombstone(ORIGIN, {"id": 1})
    assert parse(KEY_BARE, None) == Tombstone(ORIGIN, {"id": 1})


def test_delete_with_null_before_is_keyed_from_the_message_key() -> None:
    delete = change(KEY_BARE, value("d"))
    assert (delete.op, delete.key, delete.before, delete.after) == ("d", {"id": 1}, None, None)
    plan = batch.plan([delete], MAPPING)
    ops = plan.tables["products"].ops
    assert list(ops) == [(1,)]
    assert isinstance(ops[(1,)], batch.Delete)


def test_tombstone_without_key() -> None:
    assert parse(None, None) == Tombstone(ORIGIN, None)


# --- TOAST -----------------------------------------------------------------------------------


def test_toast_placeholder_becomes_unavailable_with_schemas() -> None:
    after = {**ROW, "description": TOAST_PLACEHOLDER, "photo": TOAST_BYTES_B64}
    event = change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("u", after=after)))
    assert event.after is not None
    assert event.after["description"] is UNAVAILABLE
    assert event.after["photo"] is UNAVAILABLE


def test_toast_placeholder_is_never_written() -> None:
    after = {**ROW, "description": TOAST_PLACEHOLDER, "photo": TOAST_BYTES_B64}
    for val in (with_schema(VALUE_SCHEMA, value("u", after=after)), value("u", after=after)):
        event = change(KEY_BARE, val)
        upsert = batch.operation(event, MAPPING.tables[0])
        assert isinstance(upsert, batch.Upsert)
        assert upsert.row == {"id": 1, "name": "Lamp"}


# --- type encodings, one at a time ----------------------------------------------------------


def _field(name: str) -> dict[str, Any]:
    return next(f for f in ROW_FIELDS if f["field"] == name)


@pytest.mark.parametrize(
    ("column", "encoded", "decoded"),
    [
        ("price", "AA==", Decimal("0.00")),
        ("price", "AKtUqYzrHwrS", Decimal("123456789012345678.90")),
        ("price", "/w==", Decimal("-0.01")),
        ("weight", {"scale": 0, "value": "Bw=="}, Decimal("7")),
        ("weight", {"scale": 2, "value": "+y4="}, Decimal("-12.34")),
        ("released", 0, date(1970, 1, 1)),
        ("released", -1, date(1969, 12, 31)),
        ("created_ms", -1, datetime(1969, 12, 31, 23, 59, 59, 999000)),
        ("created_us", 1, datetime(1970, 1, 1, 0, 0, 0, 1)),
        ("updated_at", "2024-02-29T12:34:56Z", datetime(2024, 2, 29, 12, 34, 56, tzinfo=UTC)),
        (
            "updated_at",
            "2024-02-29T12:34:56.78Z",
            datetime(2024, 2, 29, 12, 34, 56, 780000, tzinfo=UTC),
        ),
        (
            "updated_at",
            "2024-02-29T13:34:56+01:00",
            datetime(2024, 2, 29, 13, 34, 56, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("opens_at", 0, time(0)),
        ("opens_at", 86399999999, time(23, 59, 59, 999999)),
        ("uid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("attrs", "[1, null]", [1, None]),
        ("photo", "", b""),
    ],
)
def test_logical_type(column: str, encoded: Any, decoded: Any) -> None:
    schema = {"type": "struct", "fields": [_field(column)]}
    result = decode_row({column: encoded}, schema)[column]
    assert result == decoded
    assert type(result) is type(decoded)
    if isinstance(decoded, Decimal):
        assert str(result) == str(decoded)
    if isinstance(decoded, datetime):
        assert result.utcoffset() == decoded.utcoffset()


@pytest.mark.parametrize(
    ("mode_field", "encoded"),
    [
        (
            {"type": "string", "optional": True, "field": "price"},
            "12.34",
        ),  # decimal.handling.mode=string
        (
            {"type": "double", "optional": True, "field": "price"},
            12.34,
        ),  # decimal.handling.mode=double
    ],
)
def test_decimal_handling_modes_are_plain_values(mode_field: dict[str, Any], encoded: Any) -> None:
    schema = {"type": "struct", "fields": [mode_field]}
    assert decode_row({"price": encoded}, schema) == {"price": encoded}
    # A mapping declares `type: decimal` for them on schemaless topics.
    assert DECLARED["decimal"](encoded, {}) == Decimal("12.34")
    assert str(DECLARED["decimal"](encoded, {})) == "12.34"


def test_declared_types_for_schemaless_topics() -> None:
    assert DECLARED["date"](19782, {}) == date(2024, 2, 29)
    assert DECLARED["date"]("2024-02-29", {}) == date(2024, 2, 29)
    assert DECLARED["timestamp"](1709210096789, {}) == datetime(2024, 2, 29, 12, 34, 56, 789000)
    assert DECLARED["timestamp"]("2024-02-29T12:34:56Z", {}) == datetime(
        2024, 2, 29, 12, 34, 56, tzinfo=UTC
    )
    assert DECLARED["timestamp_us"](1709210096789012, {}) == datetime(
        2024, 2, 29, 12, 34, 56, 789012
    )
    assert DECLARED["time_us"](34200000000, {}) == time(9, 30)
    assert DECLARED["json"]('{"a": 1}', {}) == {"a": 1}
    assert DECLARED["bytes"]("iVBORw==", {}) == b"\x89PNG"


# --- source block, ordering, transaction metadata --------------------------------------------


def test_sequence_orders_interleaved_transactions_by_commit() -> None:
    # T1 commits at 200 with a change at lsn 150; T2 commits later with a change at lsn 120.
    first = change(
        KEY_BARE, value("u", after=ROW, source=source(sequence='["100","150"]', lsn=150))
    )
    second = change(
        KEY_BARE, value("u", after=ROW, source=source(sequence='["200","120"]', lsn=120))
    )
    assert first.position == f"{100:016x}/{150:016x}"
    assert second.position == f"{200:016x}/{120:016x}"
    assert first.position < second.position


def test_sequence_with_null_last_commit() -> None:
    event = change(KEY_BARE, value("c", after=ROW, source=source(sequence='[null,"24023128"]')))
    assert event.position == f"{0:016x}/{24023128:016x}"


def test_without_sequence_or_lsn() -> None:
    no_sequence = change(KEY_BARE, value("c", after=ROW, source=source(sequence=None)))
    assert no_sequence.position == f"{0:016x}/{24023128:016x}"
    no_lsn = change(KEY_BARE, value("c", after=ROW, source=source(sequence=None, lsn=None)))
    assert no_lsn.position is None


def test_transaction_block_is_accepted() -> None:
    block = {"id": "571:53195832", "total_order": 1, "data_collection_order": 1}
    event = change(
        KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("c", after=ROW, transaction=block))
    )
    assert event.after == DECODED
    assert event.position == STREAMED_POSITION


# --- ExtractNewRecordState -------------------------------------------------------------------

FLAT_META = {"__op": "u", "__table": "products", "__lsn": 24023128, "__source_ts_ms": 1709210096789}
FLAT_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        *ROW_FIELDS,
        {"type": "string", "optional": True, "field": "__op"},
        {"type": "string", "optional": True, "field": "__table"},
        {"type": "int64", "optional": True, "field": "__lsn"},
        {"type": "int64", "optional": True, "field": "__source_ts_ms"},
        {"type": "string", "optional": True, "field": "__deleted"},
    ],
    "optional": False,
    "name": "legacy.public.products.Value",
}


def test_flattened_update_with_schemas() -> None:
    flat = {**ROW, **FLAT_META, "__deleted": "false"}
    event = change(KEY_WITH_SCHEMA, with_schema(FLAT_SCHEMA, flat))
    assert event == Change(
        ORIGIN,
        "u",
        {"id": 1},
        None,
        DECODED,
        f"{24023128:016x}/{24023128:016x}",
        1709210096789,
        "products",
        flattened=True,
    )


def test_flattened_delete_rewrite_then_tombstone() -> None:
    flat = {**ROW, **FLAT_META, "__op": "d", "__deleted": "true"}
    event = change(KEY_BARE, flat)
    assert (event.op, event.before, event.after) == ("d", ROW, None)
    assert parse(KEY_BARE, None) == Tombstone(ORIGIN, {"id": 1})


def test_flattened_snapshot_read_and_bare_row() -> None:
    read = change(KEY_BARE, {**ROW, **FLAT_META, "__op": "r", "__deleted": "false"})
    assert (read.op, read.after, read.position) == ("r", ROW, f"{0:016x}/{24023128:016x}")
    bare = change(KEY_BARE, ROW)  # no metadata fields configured
    assert bare == Change(
        ORIGIN, "u", {"id": 1}, None, ROW, None, None, None, schemaless=True, flattened=True
    )


def test_flattened_row_may_have_columns_named_like_envelope_fields() -> None:
    row = {"id": 1, "source": "web", "after": "noon", "schema": "v2", "__op": "c"}
    event = change(KEY_BARE, row)
    assert (event.op, event.after) == (
        "c",
        {"id": 1, "source": "web", "after": "noon", "schema": "v2"},
    )


# --- heartbeat and transaction topics ------------------------------------------------------


def test_heartbeat_topic_is_not_data() -> None:
    topic = f"__debezium-heartbeat.{PREFIX}"
    key = with_schema(
        {
            "type": "struct",
            "fields": [{"type": "string", "optional": False, "field": "serverName"}],
            "optional": False,
            "name": "io.debezium.connector.common.ServerNameKey",
        },
        {"serverName": PREFIX},
    )
    val = with_schema(
        {
            "type": "struct",
            "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}],
            "optional": False,
            "name": "io.debezium.connector.common.Heartbeat",
        },
        {"ts_ms": 1709210096789},
    )
    assert parse(key, val, topic) == Heartbeat(Origin(topic, 2, 7), 1709210096789)
    assert parse({"serverName": PREFIX}, {"ts_ms": 5}, topic) == Heartbeat(Origin(topic, 2, 7), 5)


def test_transaction_topic_is_not_data() -> None:
    topic = f"{PREFIX}.transaction"
    begin = {
        "status": "BEGIN",
        "id": "571:53195829",
        "ts_ms": 1709210096700,
        "event_count": None,
        "data_collections": None,
    }
    end = {
        "status": "END",
        "id": "571:53195829",
        "ts_ms": 1709210096800,
        "event_count": 2,
        "data_collections": [
            {"data_collection": "public.products", "event_count": 1},
            {"data_collection": "public.categories", "event_count": 1},
        ],
    }
    origin = Origin(topic, 2, 7)
    key = {"id": "571:53195829"}
    assert parse(key, begin, topic) == TransactionBoundary(origin, "BEGIN", "571:53195829")
    end_schema = {
        "type": "struct",
        "optional": False,
        "name": "io.debezium.connector.common.TransactionMetadataValue",
    }
    assert parse(key, with_schema(end_schema, end), topic) == TransactionBoundary(
        origin, "END", "571:53195829"
    )


# --- malformed input: EventError with the origin ------------------------------------------

GOOD = value("c", after=ROW)
BAD_ROW_SCHEMA = with_schema(VALUE_SCHEMA, value("c", after=ROW))


def _with_after(**columns: Any) -> dict[str, Any]:
    return with_schema(VALUE_SCHEMA, value("c", after={**ROW, **columns}))


MALFORMED: list[tuple[str, Any, Any, str, str]] = [
    # (id, key bytes, value bytes, topic, expected words in the reason)
    ("value not JSON", raw(KEY_BARE), b'{"op": "c",', TOPIC, "the value is not JSON"),
    ("value not UTF-8", raw(KEY_BARE), b"\xff\xfe", TOPIC, "the value is not JSON"),
    ("key not JSON", b"{id: 1}", raw(GOOD), TOPIC, "the key is not JSON"),
    ("key not an object", raw([1]), raw(GOOD), TOPIC, "the key must be a JSON object"),
    ("value an array", raw(KEY_BARE), raw([GOOD]), TOPIC, "the value must be a JSON object"),
    ("value a string", raw(KEY_BARE), raw("c"), TOPIC, "the value must be a JSON object"),
    (
        "schema not an object",
        raw(KEY_BARE),
        raw({"schema": [], "payload": GOOD}),
        TOPIC,
        "schema must be an object",
    ),
    ("missing payload", raw(KEY_BARE), raw({"schema": VALUE_SCHEMA}), TOPIC, "'payload'"),
    (
        "null payload",
        raw(KEY_BARE),
        raw({"schema": VALUE_SCHEMA, "payload": None}),
        TOPIC,
        "must be a JSON object",
    ),
    ("missing op", raw(KEY_BARE), raw({k: v for k, v in GOOD.items() if k != "op"}), TOPIC, "'op'"),
    (
        "missing source",
        raw(KEY_BARE),
        raw({k: v for k, v in GOOD.items() if k != "source"}),
        TOPIC,
        "without 'source'",
    ),
    ("unknown op", raw(KEY_BARE), raw(value("x", after=ROW)), TOPIC, "unknown op 'x'"),
    ("op not a string", raw(KEY_BARE), raw(value(1, after=ROW)), TOPIC, "unknown op 1"),  # type: ignore[arg-type]
    ("op a list", raw(KEY_BARE), raw(value(["c"], after=ROW)), TOPIC, "malformed event"),  # type: ignore[arg-type]
    (
        "source not an object",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source="pg")),
        TOPIC,
        "'source' must be an object",
    ),
    (
        "after not an object",
        raw(KEY_BARE),
        raw(value("c", after=[1])),
        TOPIC,
        "after: a row must be a JSON object",
    ),
    ("create without after", raw(KEY_BARE), raw(value("c")), TOPIC, "op 'c' without 'after'"),
    ("read without after", raw(KEY_BARE), raw(value("r")), TOPIC, "op 'r' without 'after'"),
    (
        "delete without key or before",
        None,
        raw(value("d")),
        TOPIC,
        "neither a message key nor 'before'",
    ),
    (
        "lsn a string",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(lsn="24023128"))),
        TOPIC,
        "source.lsn must be an integer",
    ),
    (
        "lsn a boolean",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(lsn=True))),
        TOPIC,
        "source.lsn must be an integer",
    ),
    (
        "sequence not JSON",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(sequence="24023128"))),
        TOPIC,
        "source.sequence",
    ),
    (
        "sequence a real array",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(sequence=["1", "2"]))),
        TOPIC,
        "source.sequence",
    ),
    (
        "sequence of three",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(sequence='["1","2","3"]'))),
        TOPIC,
        "source.sequence",
    ),
    (
        "sequence not LSNs",
        raw(KEY_BARE),
        raw(value("c", after=ROW, source=source(sequence='["a","b"]'))),
        TOPIC,
        "source.sequence",
    ),
    (
        "decimal bad base64",
        raw(KEY_BARE),
        raw(_with_after(price="12.34!")),
        TOPIC,
        "'price' (org.apache.kafka.connect.data.Decimal): invalid base64",
    ),
    (
        "decimal a number",
        raw(KEY_BARE),
        raw(_with_after(price=12.34)),
        TOPIC,
        "expected a base64 string",
    ),
    (
        "variable decimal without scale",
        raw(KEY_BARE),
        raw(_with_after(weight={"value": "MDk="})),
        TOPIC,
        "VariableScaleDecimal must be",
    ),
    (
        "variable decimal bad base64",
        raw(KEY_BARE),
        raw(_with_after(weight={"scale": 1, "value": "%%"})),
        TOPIC,
        "invalid base64",
    ),
    (
        "date a string",
        raw(KEY_BARE),
        raw(_with_after(released="2024-02-29")),
        TOPIC,
        "'released' (io.debezium.time.Date): expected an integer",
    ),
    (
        "timestamp a float",
        raw(KEY_BARE),
        raw(_with_after(created_ms=1.5)),
        TOPIC,
        "expected an integer",
    ),
    (
        "micro timestamp a boolean",
        raw(KEY_BARE),
        raw(_with_after(created_us=True)),
        TOPIC,
        "expected an integer",
    ),
    (
        "zoned timestamp not ISO",
        raw(KEY_BARE),
        raw(_with_after(updated_at="yesterday")),
        TOPIC,
        "'updated_at' (io.debezium.time.ZonedTimestamp)",
    ),
    (
        "zoned timestamp a number",
        raw(KEY_BARE),
        raw(_with_after(updated_at=1)),
        TOPIC,
        "expected an ISO-8601 string",
    ),
    (
        "micro time out of range",
        raw(KEY_BARE),
        raw(_with_after(opens_at=86400000000)),
        TOPIC,
        "time of day out of range",
    ),
    (
        "uuid malformed",
        raw(KEY_BARE),
        raw(_with_after(uid="not-a-uuid")),
        TOPIC,
        "'uid' (io.debezium.data.Uuid)",
    ),
    (
        "json malformed",
        raw(KEY_BARE),
        raw(_with_after(attrs="{oops")),
        TOPIC,
        "io.debezium.data.Json is not JSON",
    ),
    (
        "bytes bad base64",
        raw(KEY_BARE),
        raw(_with_after(photo="***")),
        TOPIC,
        "'photo' (bytes): invalid base64",
    ),
    (
        "key decimal bad base64",
        raw(with_schema({"type": "struct", "fields": [_field("price")]}, {"price": "!"})),
        raw(GOOD),
        TOPIC,
        "key: column 'price'",
    ),
    (
        "struct schema without fields",
        raw(KEY_BARE),
        raw(
            with_schema(
                {"type": "struct", "fields": [{**_row_schema("after"), "fields": None}]},
                value("c", after=ROW),
            )
        ),
        TOPIC,
        "a struct schema without 'fields'",
    ),
    (
        "flattened __deleted",
        raw(KEY_BARE),
        raw({**ROW, "__deleted": "yes"}),
        TOPIC,
        "__deleted must be",
    ),
    ("flattened __op", raw(KEY_BARE), raw({**ROW, "__op": "t"}), TOPIC, "unknown __op 't'"),
    (
        "flattened __lsn",
        raw(KEY_BARE),
        raw({**ROW, "__lsn": "24023128"}),
        TOPIC,
        "__lsn must be an integer",
    ),
    (
        "flattened bad decimal",
        raw(KEY_BARE),
        raw(with_schema(FLAT_SCHEMA, {**ROW, "price": "?"})),
        TOPIC,
        "row: column 'price'",
    ),
    (
        "transaction without status",
        raw({"id": "1:2"}),
        raw({"id": "1:2"}),
        "legacy.transaction",
        "without status BEGIN or END",
    ),
    ("transaction null value", raw({"id": "1:2"}), None, "legacy.transaction", "without a value"),
    ("transaction not JSON", None, b"BEGIN", "legacy.transaction", "the value is not JSON"),
    ("heartbeat not JSON", None, b"{", "__debezium-heartbeat.legacy", "the value is not JSON"),
    (
        "other prefix",
        raw(KEY_BARE),
        raw(GOOD),
        "other.public.products",
        "not a data topic of prefix 'legacy'",
    ),
    ("no table in topic", raw(KEY_BARE), raw(GOOD), "legacy.products", "not a data topic"),
    ("other heartbeat", None, raw({"ts_ms": 1}), "__debezium-heartbeat.other", "not a data topic"),
]


@pytest.mark.parametrize(
    ("key", "val", "topic", "reason"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_input_is_an_event_error_with_its_origin(
    key: bytes | None, val: bytes | None, topic: str, reason: str
) -> None:
    origin = Origin(topic, 2, 7)
    with pytest.raises(EventError) as caught:
        envelope.parse(origin, key, val, PREFIX)
    error = caught.value
    assert error.origin == origin
    assert reason in error.reason
    assert str(error).startswith(f"{topic}[2]@7: ")


# --- one Parser per topic prefix: schemas remembered -------------------------------------------


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()  # as JsonConverter writes


def test_a_parser_decodes_repeated_schemas_the_same_as_the_first_time() -> None:
    parser = envelope.Parser(PREFIX)
    key = compact(KEY_WITH_SCHEMA)
    first = compact(with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    second = compact(with_schema(VALUE_SCHEMA, value("u", after={**ROW, "name": "Desk lamp"})))
    events = [parser.parse(ORIGIN, key, data) for data in (first, second, first)]
    assert (
        events[0]
        == events[2]
        == change(KEY_WITH_SCHEMA, with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    )
    assert isinstance(events[1], Change) and events[1].after == {**DECODED, "name": "Desk lamp"}


def test_a_changed_schema_is_picked_up() -> None:
    parser = envelope.Parser(PREFIX)
    parser.parse(ORIGIN, None, compact(with_schema(VALUE_SCHEMA, value("c", after=ROW))))
    # The column `price` becomes decimal.handling.mode=string: the same value, a new schema.
    evolved = json.loads(json.dumps(VALUE_SCHEMA))
    for row in evolved["fields"][:2]:
        row["fields"] = [
            {"type": "string", "optional": True, "field": "price"} if f["field"] == "price" else f
            for f in row["fields"]
        ]
    event = parser.parse(
        ORIGIN, None, compact(with_schema(evolved, value("c", after={**ROW, "price": "12.34"})))
    )
    assert isinstance(event, Change) and event.after is not None
    assert event.after["price"] == "12.34"
    assert event.after["weight"] == Decimal("12.345")


def test_a_remembered_schema_with_a_broken_payload_is_still_an_error() -> None:
    parser = envelope.Parser(PREFIX)
    good = compact(with_schema(VALUE_SCHEMA, value("c", after=ROW)))
    parser.parse(ORIGIN, None, good)
    head = good[: good.index(b',"payload":') + len(b',"payload":')]
    with pytest.raises(EventError, match="the value is not JSON"):
        parser.parse(ORIGIN, None, head + b'{"before":null,"after":}')
    with pytest.raises(EventError, match="value must be a JSON object"):
        parser.parse(ORIGIN, None, head + b"[1]}")


# --- special values (issue 17), each by the connector's documented encoding -------------------
# "TIMESTAMP type": +/-infinity in a `timestamp` column arrive as pgjdbc's
# PGStatement.DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY, in every precision mode;
# `timestamptz` (ZonedTimestamp) as the strings "infinity" / "-infinity"; `date` as the epoch
# days of the connector's POSITIVE_INFINITY_LOCAL_DATE (+5877611-06-21) and
# NEGATIVE_INFINITY_LOCAL_DATE (-5877611-06-22). NUMERIC's NaN and infinities only exist in
# decimal.handling.mode=string ("NaN", "Infinity", "-Infinity") and =double (Jackson writes a
# non-finite double as those strings).

STRING_DECIMAL = {"type": "string", "optional": True, "field": "price"}
DOUBLE_DECIMAL = {"type": "double", "optional": True, "field": "price"}
LATEST_UTC = datetime.max.replace(tzinfo=UTC)
EARLIEST_UTC = datetime.min.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "encoded", "decoded"),
    [
        (_field("created_ms"), 9223372036825200000, datetime.max),
        (_field("created_ms"), -9223372036832400000, datetime.min),
        (_field("created_us"), 9223372036825200000, datetime.max),
        (_field("created_us"), -9223372036832400000, datetime.min),
        (
            {**_field("created_us"), "name": "io.debezium.time.NanoTimestamp"},
            9223372036825200000,
            datetime.max,
        ),
        (_field("updated_at"), "infinity", LATEST_UTC),
        (_field("updated_at"), "-infinity", EARLIEST_UTC),
        (_field("released"), 2146033979, date.max),
        (_field("released"), -2147472691, date.min),
        (_field("released"), 2932896, date(9999, 12, 31)),  # the last day a date can hold
        (_field("created_ms"), 253402300799999, datetime(9999, 12, 31, 23, 59, 59, 999000)),
    ],
    ids=[
        "Timestamp +infinity",
        "Timestamp -infinity",
        "MicroTimestamp +infinity",
        "MicroTimestamp -infinity",
        "NanoTimestamp +infinity",
        "ZonedTimestamp infinity",
        "ZonedTimestamp -infinity",
        "Date +infinity",
        "Date -infinity",
        "Date 9999-12-31",
        "Timestamp 9999-12-31",
    ],
)
def test_infinite_dates_and_timestamps_become_the_extremes(
    field: dict[str, Any], encoded: Any, decoded: Any
) -> None:
    name = field["field"]
    assert decode_row({name: encoded}, {"type": "struct", "fields": [field]})[name] == decoded


@pytest.mark.parametrize(
    ("field", "encoded", "check"),
    [
        (STRING_DECIMAL, "NaN", lambda v: isinstance(v, Decimal) and v.is_nan()),
        (STRING_DECIMAL, "Infinity", lambda v: v == Decimal("Infinity")),
        (STRING_DECIMAL, "-Infinity", lambda v: v == Decimal("-Infinity")),
        (DOUBLE_DECIMAL, "NaN", lambda v: isinstance(v, float) and v != v),
        (DOUBLE_DECIMAL, "Infinity", lambda v: v == float("inf")),
        (DOUBLE_DECIMAL, "-Infinity", lambda v: v == float("-inf")),
        (DOUBLE_DECIMAL, 12.5, lambda v: v == 12.5),
    ],
    ids=[
        "string NaN",
        "string Infinity",
        "string -Infinity",
        "double NaN",
        "double Infinity",
        "double -Infinity",
        "double finite",
    ],
)
def test_non_finite_decimals(field: dict[str, Any], encoded: Any, check: Any) -> None:
    value = decode_row({"price": encoded}, {"type": "struct", "fields": [field]})["price"]
    if field is STRING_DECIMAL:  # decimal.handling.mode=string: the mapping declares decimal
        value = DECLARED["decimal"](value, {})
    assert check(value)


@pytest.mark.parametrize(
    ("field", "encoded", "reason"),
    [
        (_field("released"), 10**9, "days from 1970-01-01 is outside the years 1-9999"),
        (_field("released"), -(10**7), "outside the years 1-9999"),
        (_field("created_ms"), 2**62, "is outside the years 1-9999"),
        (_field("created_us"), -(2**62), "is outside the years 1-9999"),
        (_field("updated_at"), "+10000-01-01T00:00:00Z", "Invalid isoformat string"),
        (
            {**_field("price"), "parameters": {"scale": "999999999"}},
            "BNI=",
            "decimal scale 999999999 is out of range",
        ),
        (_field("weight"), {"scale": -(10**9), "value": "MDk="}, "out of range"),
        (DOUBLE_DECIMAL, "twelve", "expected a number"),
    ],
    ids=[
        "Date far future",
        "Date far past",
        "Timestamp far future",
        "MicroTimestamp far past",
        "ZonedTimestamp year 10000",
        "Decimal absurd scale",
        "VariableScaleDecimal absurd scale",
        "double not a number",
    ],
)
def test_values_no_target_can_hold_are_event_errors_naming_the_column(
    field: dict[str, Any], encoded: Any, reason: str
) -> None:
    schema = {
        **VALUE_SCHEMA,
        "fields": [
            {**_row_schema("before"), "fields": [_field("id"), field]},
            {**_row_schema("after"), "fields": [_field("id"), field]},
            *VALUE_SCHEMA["fields"][2:],
        ],
    }
    document = with_schema(schema, value("c", after={"id": 1, field["field"]: encoded}))
    with pytest.raises(EventError) as caught:
        parse(KEY_WITH_SCHEMA, document)
    assert caught.value.origin == ORIGIN
    assert caught.value.reason.startswith(f"after: column {field['field']!r}")
    assert reason in caught.value.reason


def test_a_signalling_nan_is_not_a_decimal() -> None:
    with pytest.raises(ValueError, match="not a decimal number"):
        DECLARED["decimal"]("sNaN", {})


def test_a_payload_without_its_schema_is_named_as_such() -> None:
    # Not a flattened row with an implied `op: u`: JsonConverter writes both halves or neither.
    with pytest.raises(EventError, match="the value has a 'payload' but no 'schema'"):
        parse(KEY_BARE, {"payload": value("c", after=ROW)})


def test_an_lsn_outside_64_bits_is_an_event_error() -> None:
    # A negative LSN would sort wrong as hex; orjson reads integers beyond 64 bits as floats.
    for lsn, reason in ((-1, "an LSN out of range"), (2**64, "source.lsn must be an integer")):
        with pytest.raises(EventError, match=reason):
            parse(KEY_BARE, value("u", after=ROW, source=source(lsn=lsn, sequence=None)))


def test_an_unhashable_or_null_key_is_rejected_by_the_planner() -> None:
    # Without the target's column checks (none for this key's type), the planner itself.
    listed = change({"id": [1]}, value("d", before={"id": [1]}))
    null = change({"id": None}, value("d", before={"id": None}))
    plan = batch.plan([listed, null], MAPPING)
    assert [e.reason for e in plan.rejected] == [
        "products: the key is not a value",
        "products: key column(s) ['id'] are null",
    ]
