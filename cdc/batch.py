"""A batch of change events turned into per-table operations. Pure: no I/O.

Within a batch, only the last operation per key of a target table matters, so events are
coalesced per key in arrival order (which Kafka keeps per key: Debezium partitions by key).
That is what makes a delete followed by an insert of the same key end with the row present,
and what keeps a batch's database work proportional to the keys it touches. An update whose
unchanged TOASTed columns were not sent keeps the values an earlier event of the batch gave
them. A truncate drops everything queued before it for that table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cdc.envelope import Change
from cdc.errors import EventError, Origin
from cdc.mapping import Mapping, TableMapping
from cdc.values import DECLARED, UNAVAILABLE

Key = tuple[Any, ...]


@dataclass(slots=True)
class Upsert:
    origin: Origin
    key: Key
    row: dict[str, Any]  # target columns, the position column included when mapped
    position: str | None


@dataclass(slots=True)
class Delete:
    origin: Origin
    key: Key
    position: str | None


@dataclass(slots=True)
class Segment:
    truncate: bool = False  # empty the table before the operations
    ops: dict[Key, Upsert | Delete] = field(default_factory=dict)


@dataclass(slots=True)
class TableBatch:
    mapping: TableMapping
    segments: list[Segment] = field(default_factory=lambda: [Segment()])
    events: int = 0  # row events folded into the segments


@dataclass(frozen=True, slots=True)
class Progress:
    position: str | None
    source_ts_ms: int | None


@dataclass(slots=True)
class Plan:
    tables: dict[str, TableBatch] = field(default_factory=dict)  # by target, mapping order
    rejected: list[EventError] = field(default_factory=list)
    # per topic: logical messages, truncates not enabled, unmapped topics
    ignored: dict[str, int] = field(default_factory=dict)
    progress: dict[str, Progress] = field(default_factory=dict)  # by topic


def _typed(column_type: str | None, value: Any, schemaless: bool) -> Any:
    # Declared types decode plain JSON values (objects too: a VariableScaleDecimal is one);
    # a value decoded from its schema is already typed and passes through.
    if column_type is None or not schemaless or value is None or value is UNAVAILABLE:
        return value
    return DECLARED[column_type](value, {})


def operation(change: Change, table: TableMapping) -> Upsert | Delete | None:
    """The target operation of one row event (None for t and m); raises EventError."""
    origin = change.origin
    if change.op in ("t", "m"):
        return None
    try:
        if change.op == "d":
            return Delete(origin, _delete_key(change, table), change.position)
        after = change.after or {}
        row: dict[str, Any] = {}
        schemaless = change.schemaless
        for column in table.columns:
            try:
                value = after[column.source]
            except KeyError:
                raise EventError(origin, f"'after' has no column {column.source!r}") from None
            if value is UNAVAILABLE:
                continue
            row[column.target] = (
                value if column.type is None else _typed(column.type, value, schemaless)
            )
        missing = [k for k in table.key if k not in row]
        if missing:
            raise EventError(origin, f"key column(s) {missing} unavailable (TOASTed)")
        if table.position is not None:
            row[table.position] = change.position
        return Upsert(origin, tuple(row[k] for k in table.key), row, change.position)
    except ValueError as exc:
        raise EventError(origin, f"{table.target}: {exc}") from exc


def _delete_key(change: Change, table: TableMapping) -> Key:
    # REPLICA IDENTITY DEFAULT: `before` holds only the key columns, or is null; the message
    # key always has them.
    sources = table.key_sources
    for row in (change.key, change.before):
        if row is not None and all(source in row for source, _ in sources):
            return tuple(_typed(kind, row[source], change.schemaless) for source, kind in sources)
    names = [source for source, _ in sources]
    raise EventError(change.origin, f"a delete without the key column(s) {names}")


def plan(changes: Iterable[Change], mapping: Mapping) -> Plan:
    result = Plan()
    for each in mapping.tables:
        result.tables[each.target] = TableBatch(each)
    positions: dict[str, str | None] = {}  # the newest per topic, for `progress`
    stamps: dict[str, int | None] = {}
    for change in changes:
        topic = change.origin.topic
        table = mapping.by_topic.get(topic)
        if table is None:
            _ignore(result, change)
            continue
        if change.position is not None and (positions.get(topic) or "") < change.position:
            positions[topic] = change.position
        else:
            positions.setdefault(topic, None)
        if change.source_ts_ms is not None and (stamps.get(topic) or 0) < change.source_ts_ms:
            stamps[topic] = change.source_ts_ms
        else:
            stamps.setdefault(topic, None)
        try:
            op = operation(change, table)
        except EventError as exc:
            result.rejected.append(exc)
            continue
        batch = result.tables[table.target]
        if op is None:
            if change.op == "t" and table.truncate:
                batch.segments = [Segment(truncate=True)]
            else:
                _ignore(result, change)
            continue
        batch.events += 1
        ops = batch.segments[-1].ops
        previous = ops.pop(op.key, None)  # pop: the key moves to the end, in arrival order
        if isinstance(op, Upsert) and isinstance(previous, Upsert):
            op.row = {**previous.row, **op.row}
        ops[op.key] = op
    result.progress = {t: Progress(p, stamps[t]) for t, p in positions.items()}
    return result


def _ignore(result: Plan, change: Change) -> None:
    topic = change.origin.topic
    result.ignored[topic] = result.ignored.get(topic, 0) + 1
