"""The `read_your_writes:` section of routes.yaml: which upstreams the CDC bridge feeds.

read_your_writes:
  mode: position            # window (default) | position
  window: 5s                # after a write, the writer's reads stay with the monolith this
                            # long; in position mode the upper bound, ended sooner by positions
  poll: 100ms               # position mode: how often the bridge's positions are read (only
                            # while someone is pinned)
  upstreams:                # the CDC-fed upstreams: a pinned user's reads go to the monolith
    search:
      tables: all           # position mode: the source tables that feed it (a list:
                            # [public.products]); all: every table a write reports
      positions: sqlite:///var/search.db   # position mode: the database holding the bridge's
                            # cdc_positions (or positions_env: NAME, a URL with a password)
      topic_prefix: legacy  # the bridge's topic prefix (cdc/mappings.yaml topic_prefix)

The monolith is the rollout's (`rollout: {monolith: NAME}`, else `default`): writes are
unsafe requests it answers, pinned reads go to it. Behaviour: gateway/rollout/consistency.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from yaml.nodes import Node, ScalarNode

from common.validation import NodeReader, parse_duration, positive_duration

MODES = ("window", "position")
DEFAULT_WINDOW = 5.0
DEFAULT_POLL = 0.1
DEFAULT_PREFIX = "legacy"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class FedUpstream:
    """An upstream whose database the CDC bridge fills from the monolith's tables."""

    name: str
    tables: frozenset[str] | None = None  # None: every table a write reports
    positions: str | None = field(default=None, repr=False)  # database URL (may hold a password)
    topic_prefix: str = DEFAULT_PREFIX

    @property
    def source(self) -> tuple[str, str] | None:
        """What names one set of applied positions: (database URL, topic prefix)."""
        return None if self.positions is None else (self.positions, self.topic_prefix)

    def concerns(self, table: str) -> bool:
        return self.tables is None or table in self.tables


@dataclass(frozen=True, slots=True)
class ConsistencySettings:
    monolith: str
    upstreams: dict[str, FedUpstream]
    mode: str = "window"
    window: float = DEFAULT_WINDOW
    poll: float = DEFAULT_POLL


def read_consistency(
    reader: NodeReader, node: Node, declared: set[str], monolith: str | None
) -> ConsistencySettings | None:
    where = "read_your_writes"
    fields = reader.mapping(node, where, {"mode", "window", "poll", "upstreams"})
    if fields is None:
        return None
    mode = "window"
    if "mode" in fields:
        mode = reader.choice(fields["mode"], f"{where}: mode", MODES) or mode
    window = reader.optional(fields, "window", where, positive_duration, DEFAULT_WINDOW)
    poll = reader.optional(fields, "poll", where, _poll, DEFAULT_POLL)
    if monolith is None:
        reader.error(
            node,
            f"{where} needs the monolith: set rollout: {{monolith: NAME}} or default",
        )
    upstreams: dict[str, FedUpstream] = {}
    complete = monolith is not None
    if "upstreams" not in fields:
        reader.error(node, f"{where}: missing 'upstreams' (the CDC-fed upstreams)")
        complete = False
    else:
        entries = reader.mapping(fields["upstreams"], f"{where}: upstreams", None) or {}
        if not entries:
            reader.error(fields["upstreams"], f"{where}: upstreams: name at least one upstream")
            complete = False
        for name, value in entries.items():
            fed = _fed(reader, name, value, mode, declared, monolith)
            if fed is None:
                complete = False
            else:
                upstreams[name] = fed
    if not complete or monolith is None:
        return None
    return ConsistencySettings(monolith, upstreams, mode, window, poll)


def _fed(
    reader: NodeReader,
    name: str,
    node: Node,
    mode: str,
    declared: set[str],
    monolith: str | None,
) -> FedUpstream | None:
    what = f"read_your_writes: upstream {name!r}"
    ok = True
    if name not in declared:
        reader.error(node, f"{what}: unknown upstream")
        ok = False
    elif name == monolith:
        reader.error(node, f"{what} is the monolith: its reads are the ones pinned users get")
        ok = False
    fields = reader.mapping(node, what, {"tables", "positions", "positions_env", "topic_prefix"})
    if fields is None:
        return None
    tables = _tables(reader, fields["tables"], what) if "tables" in fields else None
    if tables == frozenset():
        ok = False
    positions = _positions(reader, fields, what)
    if mode == "position" and positions is None and "positions_env" not in fields:
        reader.error(
            node,
            f"{what}: mode position needs 'positions' (the database URL of the bridge's "
            "cdc_positions) or 'positions_env'",
        )
        ok = False
    prefix = reader.optional(fields, "topic_prefix", what, _prefix, DEFAULT_PREFIX)
    if not ok or (mode == "position" and positions is None):
        return None
    return FedUpstream(name, tables, positions, prefix)


def _tables(reader: NodeReader, node: Node, what: str) -> frozenset[str] | None:
    """`all` (None) or a non-empty list of `schema.table` names; frozenset() when invalid."""
    if isinstance(node, ScalarNode):
        if reader.choice(node, f"{what}: tables", ("all",)) is None:
            return frozenset()
        return None
    names = set()
    items = reader.sequence(node, f"{what}: tables")
    if not items:
        reader.error(node, f"{what}: tables: name at least one table, or write all")
        return frozenset()
    valid = True
    for item in items:
        text = reader.scalar(item, f"{what}: tables")
        if text is None:
            valid = False
        elif not _TABLE.match(text):
            reader.error(item, f"{what}: tables: {text!r} is not schema.table (public.products)")
            valid = False
        else:
            names.add(text)
    return frozenset(names) if valid else frozenset()


def _positions(reader: NodeReader, fields: dict[str, Node], what: str) -> str | None:
    keys = [key for key in ("positions", "positions_env") if key in fields]
    if len(keys) > 1:
        reader.error(fields[keys[1]], f"{what}: give either positions or positions_env")
        return None
    if keys == ["positions"]:
        return reader.converted(fields["positions"], f"{what}: positions", _database_url)
    if keys == ["positions_env"]:
        env = reader.scalar(fields["positions_env"], f"{what}: positions_env") or ""
        if env not in os.environ:
            reader.error(
                fields["positions_env"], f"{what}: environment variable {env!r} is not set"
            )
            return None
        return reader.converted(
            fields["positions_env"], f"{what}: ${env}", lambda _: _database_url(os.environ[env])
        )
    return None


def _database_url(text: str) -> str:
    if not text.startswith(("sqlite:///", "postgresql")):
        raise ValueError("a database URL: sqlite:///... or postgresql+psycopg://...")
    return text


def _prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", text):
        raise ValueError(f"{text!r} is not a topic prefix")
    return text


def _poll(text: str) -> float:
    seconds = parse_duration(text)
    if not 0.01 <= seconds <= 10:
        raise ValueError(f"{text!r} must be from 10ms to 10s")
    return seconds
