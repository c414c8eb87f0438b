"""Debezium-format change records, written: the producing half of `envelope`.

The dev capture (`capture.py`) and the benchmark publish with it, so what they send is what
the Debezium PostgreSQL connector sends through JsonConverter: the same topic names, key and
value documents (with or without schemas), `source` block and op codes. Only
`source.connector` ("sqlite-dev") and `source.version` say who wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONNECTOR = "sqlite-dev"
VERSION = "strangler-dev"


@dataclass(frozen=True, slots=True)
class Field:
    """A column's Kafka Connect schema: its type and, for logical types, the name."""

    name: str
    type: str  # int32, int64, string, boolean, double, bytes
    logical: str | None = None
    optional: bool = True

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type, "optional": self.optional, "field": self.name}
        if self.logical is not None:
            schema["name"] = self.logical
            schema["version"] = 1
        return schema


@dataclass(frozen=True, slots=True)
class Source:
    """The `source` block's fixed part, and the shape of one table's records."""

    prefix: str  # topic.prefix
    schema: str  # e.g. public
    table: str
    fields: tuple[Field, ...]
    key: tuple[str, ...]
    db: str = "legacy"
    with_schemas: bool = True

    @property
    def topic(self) -> str:
        return f"{self.prefix}.{self.schema}.{self.table}"

    def _struct(self, name: str, fields: list[dict[str, Any]], field: str | None) -> dict[str, Any]:
        struct: dict[str, Any] = {"type": "struct", "fields": fields, "optional": field is not None}
        struct["name"] = name
        if field is not None:
            struct["field"] = field
        return struct

    def key_schema(self) -> dict[str, Any]:
        fields = [{**f.schema(), "optional": False} for f in self.fields if f.name in set(self.key)]
        return self._struct(f"{self.topic}.Key", fields, None)

    def value_schema(self) -> dict[str, Any]:
        row = [f.schema() for f in self.fields]
        source = [
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
                    "allowed": "true,first,first_in_data_collection,"
                    "last_in_data_collection,last,false,incremental"
                },
                "default": "false",
                "field": "snapshot",
            },
            {"type": "string", "optional": False, "field": "db"},
            {"type": "string", "optional": True, "field": "sequence"},
            {"type": "string", "optional": False, "field": "schema"},
            {"type": "string", "optional": False, "field": "table"},
            {"type": "int64", "optional": True, "field": "txId"},
            {"type": "int64", "optional": True, "field": "lsn"},
            {"type": "int64", "optional": True, "field": "xmin"},
        ]
        return {
            "type": "struct",
            "fields": [
                self._struct(f"{self.topic}.Value", row, "before"),
                self._struct(f"{self.topic}.Value", row, "after"),
                {
                    **self._struct("io.debezium.connector.postgresql.Source", source, "source"),
                    "optional": False,
                },
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
            ],
            "optional": False,
            "name": f"{self.topic}.Envelope",
            "version": 2,
        }

    def _document(self, schema: dict[str, Any], payload: Any) -> bytes:
        document = {"schema": schema, "payload": payload} if self.with_schemas else payload
        return json.dumps(document, separators=(",", ":")).encode()

    def key_bytes(self, row: dict[str, Any]) -> bytes:
        return self._document(self.key_schema(), {k: row[k] for k in self.key})

    def value_bytes(
        self,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        *,
        lsn: int,
        last_commit: int | None,
        ts_ms: int,
        snapshot: str = "false",
        tx_id: int | None = None,
    ) -> bytes:
        source = {
            "version": VERSION,
            "connector": CONNECTOR,
            "name": self.prefix,
            "ts_ms": ts_ms,
            "snapshot": snapshot,
            "db": self.db,
            "sequence": json.dumps([None if last_commit is None else str(last_commit), str(lsn)]),
            "schema": self.schema,
            "table": self.table,
            "txId": tx_id,
            "lsn": lsn,
            "xmin": None,
        }
        payload = {"before": before, "after": after, "source": source, "op": op, "ts_ms": now_ms()}
        return self._document(self.value_schema(), payload)


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def zoned_timestamp(value: datetime) -> str:
    """io.debezium.time.ZonedTimestamp: ISO-8601 with the zone, UTC as `Z`."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
