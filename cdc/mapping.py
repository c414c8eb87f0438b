"""The mapping file (`cdc/mappings.yaml`): which topic feeds which target table, and how.

Read from PyYAML's node tree, not from plain Python objects, so every error names its line;
validation collects every error instead of stopping at the first (as routes.yaml does).
The result is immutable. Shape::

    topic_prefix: legacy                 # Debezium's topic.prefix
    dead_letter_topic: strangler.cdc.dlq
    tables:
      - topic: legacy.public.categories  # <prefix>.<schema>.<table>
        target: search_categories        # a table in the target database
        key: [id]                        # the target's primary key columns
        columns: {id: id, slug: slug, name: name}   # target column: source column
        position: source_position        # the target column recording the source position
        truncate: true                   # apply `op: t` (default false: counted, ignored)
      - topic: legacy.public.products
        target: search_documents
        key: [product_id]
        columns:
          product_id: id
          updated_at: {from: updated_at, type: timestamp}   # type: for schemaless topics
        join:                            # fill columns from another target, kept current
          target: search_categories      # a target mapped earlier in this file
          on: {category_id: id}          # this target's column: that target's key column
          columns: {category_slug: slug, category_name: name}
          missing: ""                    # value while the joined row is not there (yet)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode, SequenceNode

from cdc.errors import MappingError
from cdc.values import DECLARED
from common.validation import ConfigError, ConfigIssue, NodeReader, compose, line_of, read

DEFAULT_DEAD_LETTER_TOPIC = "strangler.cdc.dlq"
DEFAULT_PATH = Path(__file__).with_name("mappings.yaml")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class Column:
    target: str
    source: str
    type: str | None = None  # a name in values.DECLARED, for schemaless topics
    line: int = 0


@dataclass(frozen=True, slots=True)
class Join:
    target: str  # the joined (lookup) target table
    on: str  # this target's column holding the lookup key
    lookup_key: str  # the joined target's key column
    columns: tuple[tuple[str, str], ...]  # (this target's column, the joined target's column)
    missing: Any = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class TableMapping:
    topic: str
    target: str
    key: tuple[str, ...]  # target columns
    columns: tuple[Column, ...]
    position: str | None = None
    truncate: bool = False
    join: Join | None = None
    line: int = 0

    # (source column, declared type) of each key column, in key order: deletes read it.
    key_sources: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)
    # "<schema>.<table>" and "<table>" of the topic: what an event's own source must name.
    source_names: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_target = {c.target: (c.source, c.type) for c in self.columns}
        # A key column missing from `columns` is an error the checker reports.
        sources = tuple(by_target.get(k, (k, None)) for k in self.key)
        object.__setattr__(self, "key_sources", sources)  # derived once, still frozen
        _, schema, name = f"..{self.topic}".rsplit(".", 2)
        object.__setattr__(self, "source_names", (f"{schema}.{name}", name))


@dataclass(frozen=True, slots=True)
class Mapping:
    topic_prefix: str
    dead_letter_topic: str
    tables: tuple[TableMapping, ...]
    source: str = "<mapping>"
    version: str = ""
    by_topic: dict[str, TableMapping] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_topic.update({t.topic: t for t in self.tables})

    @property
    def topics(self) -> list[str]:
        return [t.topic for t in self.tables]

    def joined_by(self, target: str) -> list[TableMapping]:
        """The mappings whose join reads `target`: they follow its changes."""
        return [t for t in self.tables if t.join is not None and t.join.target == target]


def load(path: str | Path = DEFAULT_PATH) -> Mapping:
    try:
        data = read(path)
    except ConfigError as exc:
        raise MappingError(exc.source, exc.issues) from exc
    return parse(data, str(path))


def parse(data: bytes, source: str = "<mapping>") -> Mapping:
    try:
        root = compose(data, source)
    except ConfigError as exc:
        raise MappingError(source, exc.issues) from exc
    checker = _Checker()
    mapping = checker.document(root, source, hashlib.sha256(data).hexdigest()[:12])
    if checker.issues or mapping is None:
        raise MappingError(source, sorted(checker.issues, key=lambda i: i.line))
    return mapping


class _Checker(NodeReader):
    """Walks the node tree once, recording every problem with its line."""

    def identifier(self, node: Node, what: str) -> str | None:
        text = self.scalar(node, what)
        if text is not None and not _IDENTIFIER.match(text):
            self.error(node, f"{what}: {text!r} is not a column or table name")
            return None
        return text

    def flag(self, node: Node, what: str) -> bool:
        text = self.scalar(node, what)
        if text not in ("true", "false"):
            self.error(node, f"{what} must be true or false")
        return text == "true"

    def document(self, root: Node | None, source: str, version: str) -> Mapping | None:
        if root is None:
            self.issues.append(ConfigIssue(1, "the file is empty"))
            return None
        top = self.mapping(root, "mapping file", {"topic_prefix", "dead_letter_topic", "tables"})
        if top is None:
            return None
        prefix = None
        if "topic_prefix" not in top:
            self.error(root, "missing 'topic_prefix'")
        else:
            prefix = self.scalar(top["topic_prefix"], "topic_prefix")
            if prefix is not None and not _TOPIC.match(prefix):
                self.error(top["topic_prefix"], f"topic_prefix {prefix!r} is not a topic name")
                prefix = None  # one error, not one more per topic checked against it
        dead_letter = DEFAULT_DEAD_LETTER_TOPIC
        if "dead_letter_topic" in top:
            dead_letter = self.scalar(top["dead_letter_topic"], "dead_letter_topic") or ""
            if not _TOPIC.match(dead_letter):
                self.error(top["dead_letter_topic"], f"{dead_letter!r} is not a topic name")
        tables: list[TableMapping] = []
        if "tables" not in top:
            self.error(root, "missing 'tables'")
        elif not isinstance(top["tables"], SequenceNode) or not top["tables"].value:
            self.error(top["tables"], "tables must be a non-empty list")
        else:
            for item in top["tables"].value:
                table = self.table(item, prefix, tables)
                if table is not None:
                    tables.append(table)
        if prefix is None:
            return None
        return Mapping(prefix, dead_letter, tuple(tables), source, version)

    def table(
        self, node: Node, prefix: str | None, earlier: list[TableMapping]
    ) -> TableMapping | None:
        fields = self.mapping(
            node,
            "table",
            {"topic", "target", "key", "columns", "position", "truncate", "join"},
        )
        if fields is None:
            return None
        for required in ("topic", "target", "key", "columns"):
            if required not in fields:
                self.error(node, f"table: missing {required!r}")
        topic = self.scalar(fields["topic"], "topic") if "topic" in fields else None
        if topic is not None and prefix is not None:
            parts = topic.split(".")
            if not topic.startswith(f"{prefix}.") or len(parts) != prefix.count(".") + 3:
                self.error(fields["topic"], f"topic {topic!r} is not {prefix}.<schema>.<table>")
            elif any(t.topic == topic for t in earlier):
                self.error(fields["topic"], f"topic {topic!r} is mapped twice")
        what = f"table {topic!r}" if topic else "table"
        target = (
            self.identifier(fields["target"], f"{what}: target") if "target" in fields else None
        )
        columns = self.columns(fields["columns"], what) if "columns" in fields else ()
        names = {c.target for c in columns}
        key = self.key(fields["key"], what, names) if "key" in fields else ()
        position = None
        if "position" in fields:
            position = self.identifier(fields["position"], f"{what}: position")
            if position is not None and position in names:
                self.error(fields["position"], f"{what}: position {position!r} is also a column")
        truncate = (
            self.flag(fields["truncate"], f"{what}: truncate") if "truncate" in fields else False
        )
        join = self.join(fields["join"], what, names, earlier) if "join" in fields else None
        if join is not None:
            for column, _ in join.columns:
                if column in names or column == position:
                    self.error(fields["join"], f"{what}: join column {column!r} is also a column")
        if topic is None or target is None or not columns or not key:
            return None
        return TableMapping(topic, target, key, columns, position, truncate, join, line_of(node))

    def columns(self, node: Node, what: str) -> tuple[Column, ...]:
        entries = self.mapping(node, f"{what}: columns", None)
        if entries is None:
            return ()
        if not entries:
            self.error(node, f"{what}: columns must map at least one column")
        result = []
        for target, value in entries.items():
            if not _IDENTIFIER.match(target):
                self.error(value, f"{what}: {target!r} is not a column name")
                continue
            column = self.column(target, value, what)
            if column is not None:
                result.append(column)
        return tuple(result)

    def column(self, target: str, node: Node, what: str) -> Column | None:
        if isinstance(node, ScalarNode):
            source = self.identifier(node, f"{what}: column {target!r}")
            return None if source is None else Column(target, source, None, line_of(node))
        fields = self.mapping(node, f"{what}: column {target!r}", {"from", "type"})
        if fields is None:
            return None
        source = target
        if "from" in fields:
            source = self.identifier(fields["from"], f"{what}: column {target!r}: from") or ""
        kind = None
        if "type" in fields:
            kind = self.scalar(fields["type"], f"{what}: column {target!r}: type")
            if kind is not None and kind not in DECLARED:
                known = ", ".join(sorted(DECLARED))
                self.error(fields["type"], f"{what}: unknown type {kind!r} (one of: {known})")
        return Column(target, source, kind, line_of(node)) if source else None

    def key(self, node: Node, what: str, names: set[str]) -> tuple[str, ...]:
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(node, f"{what}: key must be a non-empty list of target columns")
            return ()
        result = []
        for item in node.value:
            column = self.identifier(item, f"{what}: key")
            if column is None:
                continue
            if column not in names:
                self.error(item, f"{what}: key column {column!r} is not in columns")
            result.append(column)
        return tuple(result)

    def join(
        self, node: Node, what: str, names: set[str], earlier: list[TableMapping]
    ) -> Join | None:
        fields = self.mapping(node, f"{what}: join", {"target", "on", "columns", "missing"})
        if fields is None:
            return None
        for required in ("target", "on", "columns"):
            if required not in fields:
                self.error(node, f"{what}: join: missing {required!r}")
        target = (
            self.identifier(fields["target"], f"{what}: join: target")
            if "target" in fields
            else None
        )
        lookup = next((t for t in earlier if t.target == target), None)
        if target is not None and lookup is None:
            self.error(fields["target"], f"{what}: join: {target!r} is not a target mapped above")
        on: tuple[str, str] | None = None
        if "on" in fields:
            pairs = self.pairs(fields["on"], f"{what}: join: on")
            if len(pairs) != 1:
                self.error(fields["on"], f"{what}: join: on must name exactly one column pair")
            else:
                on = pairs[0]
                if on[0] not in names:
                    self.error(fields["on"], f"{what}: join: {on[0]!r} is not in columns")
                if lookup is not None and (on[1],) != lookup.key:
                    self.error(fields["on"], f"{what}: join: {on[1]!r} is not {target!r}'s key")
        columns = (
            self.pairs(fields["columns"], f"{what}: join: columns") if "columns" in fields else []
        )
        if lookup is not None:
            known = {c.target for c in lookup.columns}
            for _, column in columns:
                if column not in known:
                    self.error(fields["columns"], f"{what}: join: {target!r} has no {column!r}")
        missing = None
        if "missing" in fields:
            missing_node = fields["missing"]
            if not isinstance(missing_node, ScalarNode):
                self.error(missing_node, f"{what}: join: missing must be a single value")
            elif missing_node.tag != "tag:yaml.org,2002:null":
                missing = str(missing_node.value)
        if target is None or on is None or not columns:
            return None
        return Join(target, on[0], on[1], tuple(columns), missing, line_of(node))

    def pairs(self, node: Node, what: str) -> list[tuple[str, str]]:
        entries = self.mapping(node, what, None)
        result = []
        for name, value in (entries or {}).items():
            other = self.identifier(value, f"{what}: {name!r}")
            if not _IDENTIFIER.match(name):
                self.error(value, f"{what}: {name!r} is not a column name")
            elif other is not None:
                result.append((name, other))
        if entries is not None and not entries:
            self.error(node, f"{what} must not be empty")
        return result
