"""Column values as Debezium's JsonConverter writes them, decoded into Python values.

With schemas (`value.converter.schemas.enable=true`) each field's schema names its logical
type and the value is decoded from it. Without schemas the JSON value passes through, and
the mapping may declare a column's type (`decode_declared`), which uses the same decoders.

Encodings follow Debezium's PostgreSQL connector documentation ("Data type mappings"):
- `org.apache.kafka.connect.data.Decimal`: base64 of the big-endian two's-complement
  unscaled integer; the scale is `parameters.scale`, a string.
- `io.debezium.data.VariableScaleDecimal`: a struct `{"scale": int, "value": base64}`.
- `io.debezium.time.Date` days since the epoch; `Timestamp` ms, `MicroTimestamp` µs,
  `NanoTimestamp` ns since the epoch (no zone: the column was `timestamp`);
  `ZonedTimestamp` an ISO-8601 string with zone; `Time` ms, `MicroTime` µs, `NanoTime` ns
  since midnight; `ZonedTime` an ISO-8601 time with zone.
- `io.debezium.data.Uuid` a canonical string, `io.debezium.data.Json` a JSON document in a
  string.
An unchanged TOASTed column arrives as `__debezium_unavailable_value` (base64 of it for
binary columns): it becomes `UNAVAILABLE`, and the mapper leaves the column out.

Special values (issue 17). PostgreSQL's `infinity` / `-infinity`:
- `timestamp` (Timestamp, MicroTimestamp, NanoTimestamp): the connector sends pgjdbc's
  `PGStatement.DATE_POSITIVE_INFINITY` 9223372036825200000 and `DATE_NEGATIVE_INFINITY`
  -9223372036832400000, whatever the unit ("TIMESTAMP type" in the data type mappings);
- `timestamptz` (ZonedTimestamp): the strings `infinity` and `-infinity`;
- `date` (Date): the epoch days of the connector's `POSITIVE_INFINITY_LOCAL_DATE`
  (+5877611-06-21, 2146033979) and `NEGATIVE_INFINITY_LOCAL_DATE` (-5877611-06-22,
  -2147472691).
They become `datetime.max` / `datetime.min` (`date.max` / `date.min`): the latest and
earliest values a Python datetime, and so the search service, can hold. Any other value
outside the years 1-9999 is an error. NUMERIC's `NaN` and `Infinity` (only
decimal.handling.mode=string or double can carry them: "NaN", "Infinity", "-Infinity")
decode to the Decimal or float of that name; `cdc/columns.py` decides whether the target
column can hold them.

Failure modes: a decoder raises ValueError (bad text, base64, JSON, ISO-8601), TypeError
(a JSON value of the wrong kind) or ArithmeticError (OverflowError from date arithmetic,
decimal.InvalidOperation and decimal.Overflow from an absurd scale): `DECODE_ERRORS`.
`row_decoder` turns each into a ValueError that names the column.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

TOAST_PLACEHOLDER: Final = "__debezium_unavailable_value"
_TOAST_PLACEHOLDER_B64: Final = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()
_PLACEHOLDERS: Final = frozenset({TOAST_PLACEHOLDER, _TOAST_PLACEHOLDER_B64})
_EPOCH_DATE: Final = date(1970, 1, 1)
_EPOCH: Final = datetime(1970, 1, 1)
# What the decoders raise for a value they cannot decode (see the module docstring).
DECODE_ERRORS: Final = (ValueError, TypeError, ArithmeticError)
TIMESTAMP_INFINITY: Final = 9223372036825200000
TIMESTAMP_MINUS_INFINITY: Final = -9223372036832400000
DATE_INFINITY: Final = 2146033979
DATE_MINUS_INFINITY: Final = -2147472691
_INFINITE_STAMPS: Final = {TIMESTAMP_INFINITY: datetime.max, TIMESTAMP_MINUS_INFINITY: datetime.min}
_INFINITE_DATES: Final = {DATE_INFINITY: date.max, DATE_MINUS_INFINITY: date.min}
_INFINITE_ZONED: Final = {
    "infinity": datetime.max.replace(tzinfo=UTC),
    "-infinity": datetime.min.replace(tzinfo=UTC),
}
_NON_FINITE: Final = frozenset({"NaN", "Infinity", "-Infinity"})


class _Unavailable:
    """The TOAST placeholder: the column did not change and its value was not sent."""

    _instance: _Unavailable | None = None

    def __new__(cls) -> _Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"


UNAVAILABLE: Final = _Unavailable()

Decoder = Callable[[Any, dict[str, Any]], Any]


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 {value!r}") from exc


def _scaled(unscaled: bytes, scale: int) -> Decimal:
    try:
        return Decimal(int.from_bytes(unscaled, "big", signed=True)).scaleb(-scale)
    except ArithmeticError as exc:  # decimal.Overflow / InvalidOperation: the exponent
        raise ValueError(f"decimal scale {scale} is out of range") from exc


def _decimal(value: Any, schema: dict[str, Any]) -> Decimal:
    try:
        scale = int(schema.get("parameters", {})["scale"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("Decimal schema without an integer 'scale' parameter") from exc
    return _scaled(_b64(value), scale)


def _variable_decimal(value: Any, _schema: dict[str, Any]) -> Decimal:
    if not isinstance(value, dict) or not isinstance(value.get("scale"), int):
        raise ValueError("VariableScaleDecimal must be {'scale': int, 'value': base64}")
    return _scaled(_b64(value.get("value")), value["scale"])


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _days(value: Any, _schema: dict[str, Any]) -> date:
    days = _integer(value)
    infinite = _INFINITE_DATES.get(days)
    if infinite is not None:
        return infinite
    try:
        return _EPOCH_DATE + timedelta(days=days)
    except OverflowError as exc:
        raise ValueError(f"{days} days from 1970-01-01 is outside the years 1-9999") from exc


def _epoch(divisor: int) -> Decoder:
    def decode(value: Any, _schema: dict[str, Any]) -> datetime:
        ticks = _integer(value)
        infinite = _INFINITE_STAMPS.get(ticks)
        if infinite is not None:
            return infinite
        try:
            # Integer arithmetic, then microseconds: floats would round µs away.
            return _EPOCH + timedelta(microseconds=ticks * 1_000_000 // divisor)
        except OverflowError as exc:
            raise ValueError(f"timestamp {ticks} is outside the years 1-9999") from exc

    return decode


def _midnight(divisor: int) -> Decoder:
    def decode(value: Any, _schema: dict[str, Any]) -> time:
        micros = _integer(value) * 1_000_000 // divisor
        if not 0 <= micros < 86_400_000_000:
            raise ValueError(f"time of day out of range: {value!r}")
        return (datetime.min + timedelta(microseconds=micros)).time()

    return decode


def _iso_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 string, got {value!r}")
    return value


def _zoned_timestamp(value: Any, _schema: dict[str, Any]) -> datetime:
    infinite = _INFINITE_ZONED.get(value) if value.__class__ is str else None
    if infinite is not None:
        return infinite
    parsed = datetime.fromisoformat(_iso_text(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _zoned_time(value: Any, _schema: dict[str, Any]) -> time:
    return time.fromisoformat(_iso_text(value))


def _uuid(value: Any, _schema: dict[str, Any]) -> str:
    return str(uuid.UUID(_iso_text(value)))


def _json(value: Any, _schema: dict[str, Any]) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"io.debezium.data.Json must be a string, got {type(value).__name__}")
    try:
        # orjson, not json: it bounds nesting (1024) where json would raise RecursionError.
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"io.debezium.data.Json is not JSON: {exc}") from exc


def _bytes(value: Any, _schema: dict[str, Any]) -> bytes:
    return _b64(value)


def _float(value: Any, _schema: dict[str, Any]) -> Any:
    # JsonConverter (Jackson) writes a double's NaN and infinities as the strings "NaN",
    # "Infinity" and "-Infinity": JSON has no literal for them.
    if value.__class__ is str and value in _NON_FINITE:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


LOGICAL: Final[dict[str, Decoder]] = {
    "org.apache.kafka.connect.data.Decimal": _decimal,
    "io.debezium.data.VariableScaleDecimal": _variable_decimal,
    "io.debezium.time.Date": _days,
    "org.apache.kafka.connect.data.Date": _days,
    "io.debezium.time.Timestamp": _epoch(1000),
    "org.apache.kafka.connect.data.Timestamp": _epoch(1000),
    "io.debezium.time.MicroTimestamp": _epoch(1_000_000),
    "io.debezium.time.NanoTimestamp": _epoch(1_000_000_000),
    "io.debezium.time.ZonedTimestamp": _zoned_timestamp,
    "io.debezium.time.Time": _midnight(1000),
    "org.apache.kafka.connect.data.Time": _midnight(1000),
    "io.debezium.time.MicroTime": _midnight(1_000_000),
    "io.debezium.time.NanoTime": _midnight(1_000_000_000),
    "io.debezium.time.ZonedTime": _zoned_time,
    "io.debezium.data.Uuid": _uuid,
    "io.debezium.data.Json": _json,
}


def _plain_decimal(value: Any, schema: dict[str, Any]) -> Decimal:
    # decimal.handling.mode=string gives "12.34"; =double gives 12.34 (already lossy); a
    # numeric column without precision (VariableScaleDecimal) stays a {scale, value} struct.
    if isinstance(value, dict):
        return _variable_decimal(value, schema)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a decimal number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if number.is_snan():  # a signalling NaN raises on every later comparison
        raise ValueError(f"not a decimal number: {value!r}")
    return number


def _timestamp(value: Any, schema: dict[str, Any]) -> datetime:
    # Schemaless: epoch milliseconds (Timestamp) or an ISO string (ZonedTimestamp).
    if isinstance(value, int) and not isinstance(value, bool):
        return _epoch(1000)(value, schema)  # type: ignore[no-any-return]
    return _zoned_timestamp(value, schema)


def _date(value: Any, schema: dict[str, Any]) -> date:
    if isinstance(value, str):
        return date.fromisoformat(value)
    return _days(value, schema)


# The names a mapping may give in `type:` for schemaless topics.
DECLARED: Final[dict[str, Decoder]] = {
    "decimal": _plain_decimal,
    "date": _date,
    "timestamp": _timestamp,
    "timestamp_ms": _epoch(1000),
    "timestamp_us": _epoch(1_000_000),
    "time_us": _midnight(1_000_000),
    "uuid": _uuid,
    "json": _json,
    "bytes": _bytes,
}


RowDecoder = Callable[[Any], dict[str, Any]]
# Decoders by Kafka Connect schema type, for fields without a logical type.
_BY_TYPE: Final[dict[str, Decoder]] = {"bytes": _bytes, "double": _float, "float": _float}


def _plain_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
    for name, value in row.items():
        if value.__class__ is str and value in _PLACEHOLDERS:
            row[name] = UNAVAILABLE
    return row


def row_decoder(schema: dict[str, Any] | None) -> RowDecoder:
    """A decoder of `before`/`after` structs of this schema (None: schemaless), compiled once
    per schema: it visits only the fields that need decoding or may hold the TOAST
    placeholder. It decodes the row in place and returns it; raises ValueError."""
    if schema is None:
        return _plain_row
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise ValueError("a struct schema without 'fields'")
    steps: list[tuple[str, Decoder | None, dict[str, Any]]] = []
    for field in fields:
        if not isinstance(field, dict):
            raise ValueError("a struct schema's fields must be objects")
        decoder = LOGICAL.get(field.get("name", ""))
        if decoder is None:
            decoder = _BY_TYPE.get(field.get("type", ""))
        if decoder is not None or field.get("type") in ("string", "bytes"):
            steps.append((str(field.get("field")), decoder, field))

    def decode(row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
        for name, decoder, field in steps:
            value = row.get(name)
            if value is None:
                continue
            if value.__class__ is str and value in _PLACEHOLDERS:
                row[name] = UNAVAILABLE
            elif decoder is not None:
                try:
                    row[name] = decoder(value, field)
                except DECODE_ERRORS as exc:
                    kind = field.get("name", "bytes")
                    raise ValueError(f"column {name!r} ({kind}): {exc}") from exc
        return row

    return decode


def decode_row(row: Any, schema: dict[str, Any] | None) -> dict[str, Any]:
    """A `before`/`after` struct as a dict of Python values; raises ValueError."""
    return row_decoder(schema)(dict(row) if isinstance(row, dict) else row)
