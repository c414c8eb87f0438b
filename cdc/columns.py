"""Values checked against the target's column types before the write, on every database.

PostgreSQL refuses a value its column cannot hold; SQLite stores almost anything anywhere
(type affinity: `price_cents: "twelve"` lands as TEXT in an INTEGER column). So the bridge
checks each mapped value against the target column's reflected type itself, the same way on
both, and an event with a value the target cannot hold is dead-lettered with the column and
the reason, before any SQL runs (issue 17). The rules, by SQLAlchemy type:

- Integer, SmallInteger, BigInteger: an int (not a bool) within the declared type's range
  (INTEGER is 32-bit on PostgreSQL; on SQLite the declared type decides, not the 64 bits a
  SQLite INTEGER could hold).
- String, Text (VARCHAR(n)): a str of at most n characters, without U+0000 (PostgreSQL's
  text cannot hold it).
- Numeric: a Decimal, int or float. NaN: kept on PostgreSQL (numeric holds it), refused on
  SQLite (it would be stored as NULL). ±Infinity: kept on both (PostgreSQL 14+ numeric,
  SQLite REAL; an older PostgreSQL refuses it and the event is dead-lettered then).
- Float: an int, float or Decimal.
- DateTime: a datetime that stays within the years 1-9999 in UTC (what the database
  stores, and what the search service reads back); Date: a date (not a datetime); Time: a
  time.
- Boolean: a bool. LargeBinary: bytes. JSON and any other type: not checked here.

NULL passes: NOT NULL is the database's to enforce (a constraint, found per event).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa

# A check returns None when the value fits, else why it does not.
Check = Callable[[Any], str | None]
RowCheck = Callable[[dict[str, Any]], str | None]

_INT_BITS: Final = ((sa.BigInteger, 64), (sa.SmallInteger, 16), (sa.Integer, 32))


def _integer(bits: int) -> Check:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def check(value: Any) -> str | None:
        if value.__class__ is not int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected an integer, got {_shown(value)}"
        if not low <= value <= high:
            return f"{value} does not fit a {bits}-bit integer"
        return None

    return check


def _string(length: int | None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected text, got {_shown(value)}"
        if length is not None and len(value) > length:
            return f"{len(value)} characters do not fit VARCHAR({length})"
        if "\x00" in value:
            return "text with a NUL character (U+0000)"
        return None

    return check


def _numeric(nan: bool) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
            return f"expected a number, got {_shown(value)}"
        if not nan and value != value:  # NaN is the one value unequal to itself
            return "NaN cannot be stored on this database (SQLite would store NULL)"
        return None

    return check


def _float(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        return f"expected a number, got {_shown(value)}"
    return None


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return f"expected a timestamp, got {_shown(value)}"
    if value.tzinfo is not None and value.year in (1, 9999):  # only these can cross
        try:
            value.astimezone(UTC)  # the database keeps it in UTC; it must stay a datetime
        except OverflowError:
            return f"{value.isoformat()} is outside the years 1-9999 in UTC"
    return None


def _instance(kind: type, name: str, exclude: type | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, kind) or (exclude is not None and isinstance(value, exclude)):
            return f"expected {name}, got {_shown(value)}"
        return None

    return check


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def column_check(kind: sa.types.TypeEngine[Any], dialect: str) -> Check | None:
    """The check for one column type on one dialect (None: nothing to check)."""
    for base, bits in _INT_BITS:
        if isinstance(kind, base):
            return _integer(bits)
    if isinstance(kind, sa.String):  # Text, VARCHAR, CHAR too
        return _string(kind.length)
    if isinstance(kind, sa.Float):  # before Numeric: Float is a Numeric
        return _float
    if isinstance(kind, sa.Numeric):
        return _numeric(nan=dialect == "postgresql")
    if isinstance(kind, sa.DateTime):
        return _timestamp
    if isinstance(kind, sa.Date):
        return _instance(date, "a date", exclude=datetime)
    if isinstance(kind, sa.Time):
        return _instance(time, "a time of day")
    if isinstance(kind, sa.Boolean):
        return _instance(bool, "a boolean")
    if isinstance(kind, sa.LargeBinary):
        return _instance(bytes, "bytes")
    return None


# The common cases, accepted inline by `row_check` without a call (every row of every
# batch passes here: `bench cdc` spent a tenth of the bridge's time in these checks).
_OTHER, _INT, _TEXT, _STAMP = range(4)


def _fast(kind: sa.types.TypeEngine[Any]) -> tuple[int, int, int]:
    for base, bits in _INT_BITS:
        if isinstance(kind, base):
            return _INT, -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(kind, sa.String):
        return _TEXT, kind.length if kind.length is not None else sys.maxsize, 0
    if isinstance(kind, sa.DateTime):
        return _STAMP, 0, 0
    return _OTHER, 0, 0


def row_check(table: sa.Table, columns: list[str], dialect: str) -> RowCheck:
    """A check of the mapped columns of a row for `table` (only those present: a TOASTed
    column is left out of its row)."""
    checks = []
    for name in columns:
        kind = table.c[name].type
        check = column_check(kind, dialect)
        if check is not None:
            checks.append((name, *_fast(kind), check))

    def check_row(row: dict[str, Any]) -> str | None:
        for name, fast, low, high, check in checks:
            value = row.get(name)
            if value is None:
                continue
            cls = value.__class__
            if fast == _INT:
                if cls is int and low <= value <= high:
                    continue
            elif fast == _TEXT:
                if cls is str and len(value) <= low and "\x00" not in value:
                    continue
            elif fast == _STAMP and cls is datetime and 1 < value.year < 9999:
                continue
            problem = check(value)
            if problem is not None:
                return f"column {name!r}: {problem}"
        return None

    return check_row
