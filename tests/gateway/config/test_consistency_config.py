"""routes.yaml's `read_your_writes:`: the shape, and every error reported with its line."""

from __future__ import annotations

import dataclasses

import pytest

from common.validation import ConfigError
from gateway.config.consistency import ConsistencySettings, FedUpstream
from gateway.config.table import parse

HEAD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  search: {url: "http://127.0.0.1:8002"}
  reports: {url: "http://127.0.0.1:8003"}
default: legacy
auth: {default: none}
authz: none
"""


def errors(text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(text.encode(), "routes.yaml")
    return [(issue.line, issue.message) for issue in caught.value.issues]


def test_the_section_parses_into_frozen_settings() -> None:
    table = parse(
        (
            HEAD
            + """\
read_your_writes:
  mode: position
  window: 30s
  poll: 50ms
  upstreams:
    search:
      tables: all
      positions: sqlite:///var/search.db
    reports:
      tables: [public.orders, public.order_items]
      positions: postgresql+psycopg://reports@db/reports
      topic_prefix: shop
"""
        ).encode()
    )
    assert table.read_your_writes == ConsistencySettings(
        monolith="legacy",
        upstreams={
            "search": FedUpstream("search", None, "sqlite:///var/search.db", "legacy"),
            "reports": FedUpstream(
                "reports",
                frozenset({"public.orders", "public.order_items"}),
                "postgresql+psycopg://reports@db/reports",
                "shop",
            ),
        },
        mode="position",
        window=30.0,
        poll=0.05,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.read_your_writes.window = 1.0  # type: ignore[misc]


def test_window_mode_is_the_default_and_needs_no_positions() -> None:
    table = parse((HEAD + "read_your_writes: {upstreams: {search: {}}}\n").encode())
    assert table.read_your_writes == ConsistencySettings(
        "legacy", {"search": FedUpstream("search")}
    )
    assert table.read_your_writes.window == 5.0


def test_without_the_section_nothing_is_configured() -> None:
    assert parse(HEAD.encode()).read_your_writes is None


def test_positions_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYW_POSITIONS", "postgresql+psycopg://u:secret@db/search")
    table = parse(
        (
            HEAD
            + "read_your_writes:\n  mode: position\n"
            + "  upstreams: {search: {positions_env: RYW_POSITIONS}}\n"
        ).encode()
    )
    assert table.read_your_writes is not None
    fed = table.read_your_writes.upstreams["search"]
    assert fed.positions == "postgresql+psycopg://u:secret@db/search"
    assert "secret" not in repr(fed)


def test_every_error_is_reported_with_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RYW_MISSING", raising=False)
    found = errors(
        HEAD
        + """\
read_your_writes:
  mode: eventually
  window: 0s
  poll: 1ms
  colour: blue
  upstreams:
    legacy: {}
    nowhere: {}
    search:
      tables: [products, public.categories]
      positions: mysql://db/search
      topic_prefix: "bad prefix"
    reports:
      tables: some
      positions_env: RYW_MISSING
"""
    )
    assert found == [
        (9, "read_your_writes: mode must be one of window, position (got 'eventually')"),
        (10, "read_your_writes: window: '0s' must be longer than 0"),
        (11, "read_your_writes: poll: '1ms' must be from 10ms to 10s"),
        (
            12,
            "read_your_writes: unknown key 'colour' (expected one of: mode, poll, upstreams, window)",
        ),
        (
            14,
            "read_your_writes: upstream 'legacy' is the monolith: its reads are the ones pinned users get",
        ),
        (15, "read_your_writes: upstream 'nowhere': unknown upstream"),
        (
            17,
            "read_your_writes: upstream 'search': tables: 'products' is not schema.table (public.products)",
        ),
        (
            18,
            "read_your_writes: upstream 'search': positions: a database URL: sqlite:///... or postgresql+psycopg://...",
        ),
        (
            19,
            "read_your_writes: upstream 'search': topic_prefix: 'bad prefix' is not a topic prefix",
        ),
        (21, "read_your_writes: upstream 'reports': tables must be one of all (got 'some')"),
        (22, "read_your_writes: upstream 'reports': environment variable 'RYW_MISSING' is not set"),
    ]


def test_position_mode_needs_where_the_positions_are() -> None:
    found = errors(
        HEAD + "read_your_writes:\n  mode: position\n  upstreams:\n    search: {tables: all}\n"
    )
    assert found == [
        (
            11,
            "read_your_writes: upstream 'search': mode position needs 'positions' (the database "
            "URL of the bridge's cdc_positions) or 'positions_env'",
        )
    ]


def test_the_section_needs_a_monolith_and_upstreams() -> None:
    no_default = HEAD.replace("default: legacy\n", "")
    assert errors(no_default + "read_your_writes: {upstreams: {search: {}}}\n") == [
        (
            7,
            "read_your_writes needs the monolith: set rollout: {monolith: NAME} or default",
        )
    ]
    assert errors(HEAD + "read_your_writes: {window: 5s}\n") == [
        (8, "read_your_writes: missing 'upstreams' (the CDC-fed upstreams)")
    ]
    assert errors(HEAD + "read_your_writes: {upstreams: {}}\n") == [
        (8, "read_your_writes: upstreams: name at least one upstream")
    ]
    assert errors(HEAD + "read_your_writes: {upstreams: {search: {tables: []}}}\n") == [
        (8, "read_your_writes: upstream 'search': tables: name at least one table, or write all")
    ]


def test_the_rollout_monolith_is_the_one_pinned_reads_go_to() -> None:
    table = parse(
        (
            HEAD
            + "rollout: {monolith: reports}\n"
            + "read_your_writes: {upstreams: {search: {}}}\n"
        ).encode()
    )
    assert table.read_your_writes is not None
    assert table.read_your_writes.monolith == "reports"
