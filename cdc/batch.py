"""A batch of change events turned into per-table operations. Pure: no I/O.

Position is the only order (issue 17). Within a batch, each key of a target table keeps the
event with the highest source position, whatever order the events arrived in (an
at-least-once redelivery can put an older update after a newer one); an event at a position
already seen for its key is a replay and is dropped. Events without a position (a
schemaless topic without `__lsn`) have nothing else to go by and keep arrival order, which
Kafka keeps per key (Debezium partitions by key). That is what makes a delete followed by an
insert of the same key end with the row present, and what keeps a batch's database work
proportional to the keys it touches. An update whose unchanged TOASTed columns were not sent
keeps the values another event of the batch gave them, the newer event's values winning.

A truncate empties the table of every row older than it: within the batch, events older
than the newest truncate are dropped, and the sink deletes the rows older than it and
leaves a table-wide tombstone, so a replayed older event cannot bring a row back.

Every event is checked here, against the mapping (its `source` must name the mapped table)
and against the target's column types (`cdc/columns.py`); one that fails is rejected on its
own, for the dead-letter topic, and the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cdc.columns import RowCheck
from cdc.envelope import Change
from cdc.errors import EventError, Origin
from cdc.mapping import Mapping, TableMapping
from cdc.values import DECLARED, DECODE_ERRORS, UNAVAILABLE

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


@dataclass(frozen=True, slots=True)
class Truncate:
    origin: Origin
    position: str | None  # rows older than this go; None: every row


@dataclass(slots=True)
class TableBatch:
    mapping: TableMapping
    truncate: Truncate | None = None  # applied before the operations
    ops: dict[Key, Upsert | Delete] = field(default_factory=dict)
    events: int = 0  # row events folded into `ops`
    dropped: int = 0  # of those, replays and events older than the truncate: skipped
    truncates: int = 0  # truncate events (all of them take effect as the newest one)


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


def operation(
    change: Change, table: TableMapping, check: RowCheck | None = None
) -> Upsert | Delete | None:
    """The target operation of one row event (None for t and m); raises EventError."""
    origin = change.origin
    if change.op in ("t", "m"):
        return None
    try:
        if change.op == "d":
            key = _delete_key(change, table)
            _check_key(change, table, key, dict(zip(table.key, key, strict=True)), check)
            return Delete(origin, key, change.position)
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
        key = tuple(row[k] for k in table.key)
        _check_key(change, table, key, row, check)
        if table.position is not None:
            row[table.position] = change.position
        return Upsert(origin, key, row, change.position)
    except DECODE_ERRORS as exc:
        raise EventError(origin, f"{table.target}: {exc}") from exc


def _check_key(
    change: Change, table: TableMapping, key: Key, row: dict[str, Any], check: RowCheck | None
) -> None:
    """The key and the row's values fit the target (the row: the key columns of a delete)."""
    # A null key would match nothing on PostgreSQL and, in SQLite's INTEGER PRIMARY KEY (a
    # rowid), be given a new number: neither is the row the event is about.
    if None in key:
        nulls = [k for k, v in zip(table.key, key, strict=True) if v is None]
        raise EventError(change.origin, f"{table.target}: key column(s) {nulls} are null")
    try:
        hash(key)  # the batch folds events by key
    except TypeError:
        raise EventError(change.origin, f"{table.target}: the key is not a value") from None
    problem = check(row) if check is not None else None
    if problem is not None:
        raise EventError(change.origin, f"{table.target}: {problem}")


def _delete_key(change: Change, table: TableMapping) -> Key:
    # REPLICA IDENTITY DEFAULT: `before` holds only the key columns, or is null; the message
    # key always has them.
    sources = table.key_sources
    for row in (change.key, change.before):
        if row is not None and all(source in row for source, _ in sources):
            return tuple(_typed(kind, row[source], change.schemaless) for source, kind in sources)
    names = [source for source, _ in sources]
    raise EventError(change.origin, f"a delete without the key column(s) {names}")


def source_problem(change: Change, table: TableMapping) -> str | None:
    """Why the event's own `source` does not belong to the mapped table (None: it does).

    Events are routed by topic; a rerouting transform or a misconfigured connector can put
    another table's events on it, and applying them (a truncate above all) would damage the
    target. An envelope must name the topic's schema and table; a flattened row names only
    its table (`__table`), and only when the SMT was told to add it.
    """
    full, name = table.source_names
    if change.table is None:
        return None if change.flattened else "its source names no table"
    if change.table == full or (change.flattened and change.table == name):
        return None
    return f"its source is table {change.table!r}, not {full} as mapped"


def plan(
    changes: Iterable[Change], mapping: Mapping, checks: dict[str, RowCheck] | None = None
) -> Plan:
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
        # A logical message (op m) belongs to no table: it is ignored below.
        mismatch = source_problem(change, table) if change.op != "m" else None
        if mismatch is not None:
            result.rejected.append(EventError(change.origin, mismatch))
            continue
        if change.position is not None and (positions.get(topic) or "") < change.position:
            positions[topic] = change.position
        else:
            positions.setdefault(topic, None)
        if change.source_ts_ms is not None and (stamps.get(topic) or 0) < change.source_ts_ms:
            stamps[topic] = change.source_ts_ms
        else:
            stamps.setdefault(topic, None)
        batch = result.tables[table.target]
        try:
            op = operation(change, table, checks.get(table.target) if checks else None)
        except EventError as exc:
            result.rejected.append(exc)
            continue
        if op is None:
            if change.op == "t" and table.truncate:
                _truncate(batch, Truncate(change.origin, change.position))
            else:
                _ignore(result, change)
            continue
        batch.events += 1
        _fold(batch, op)
    result.progress = {t: Progress(p, stamps[t]) for t, p in positions.items()}
    return result


def _truncate(batch: TableBatch, truncate: Truncate) -> None:
    batch.truncates += 1
    current = batch.truncate
    if current is not None and _older(truncate.position, current.position):
        return  # an older truncate: the newer one already covers it
    batch.truncate = truncate
    kept = {k: op for k, op in batch.ops.items() if _after(op.position, truncate.position)}
    batch.dropped += len(batch.ops) - len(kept)
    batch.ops = kept


def _fold(batch: TableBatch, op: Upsert | Delete) -> None:
    truncate = batch.truncate
    if truncate is not None and not _after(op.position, truncate.position, arrived_later=True):
        batch.dropped += 1
        return
    ops = batch.ops
    previous = ops.get(op.key)
    if previous is None:
        ops[op.key] = op
        return
    newer, older = op, previous
    if op.position is not None and previous.position is not None:
        if op.position == previous.position:
            batch.dropped += 1  # the same event again: a replay
            return
        if op.position < previous.position:
            newer, older = previous, op
    if isinstance(newer, Upsert) and isinstance(older, Upsert):
        newer.row = {**older.row, **newer.row}  # the position column is the newer's too
    ops[op.key] = newer


def _older(position: str | None, than: str | None) -> bool:
    return position is not None and than is not None and position < than


def _after(position: str | None, truncate: str | None, *, arrived_later: bool = False) -> bool:
    """Whether an operation survives a truncate: it is newer, or (without positions to
    compare) it arrived after it."""
    if position is None or truncate is None:
        return arrived_later
    return position > truncate


def _ignore(result: Plan, change: Change) -> None:
    topic = change.origin.topic
    result.ignored[topic] = result.ignored.get(topic, 0) + 1
