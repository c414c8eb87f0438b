"""The resilience keys of routes.yaml: defaults, overrides, and every error with its line."""

from __future__ import annotations

import pytest

from common.validation import ConfigError
from gateway.config.resilience import (
    BreakerSettings,
    RetrySettings,
    Shedding,
    Timeouts,
    timeouts,
)
from gateway.config.table import RouteTable
from gateway.config.table import parse as parse_routes
from gateway.resilience.exchange import AttemptPlan, Resilience

OPEN = b"auth: {default: none}\nauthz: none\n"

FULL = b"""\
load_shedding: {max_in_flight: 500, reserve: {critical: 10%, normal: 40%}}
upstreams:
  legacy:
    url: http://127.0.0.1:8001
    timeout: 5s
    connect_timeout: 1s
    first_byte_timeout: 3s
    deadline: 20s
    max_in_flight: 50
    retries: {attempts: 4, backoff: 10ms, max_backoff: 500ms, budget: 10%, min_per_second: 1}
    breaker: {failure_rate: 25%, minimum_calls: 5, window: 30s, cool_down: 1m, probes: 1}
  search: {url: http://127.0.0.1:8002, retries: off, breaker: off}
routes:
  - name: reports
    path: /reports
    upstream: legacy
    priority: background
    timeout: 10s
    deadline: 2m
    retries: {attempts: 2, methods: [GET, PUT, delete]}
  - {name: search, path: /search, upstream: search, priority: critical, retries: off}
  - {name: plain, path: /plain, upstream: legacy}
"""


def parse(data: bytes) -> RouteTable:
    return parse_routes(data + OPEN, "routes.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text.encode())
    return [str(i) for i in info.value.issues]


def test_every_key_is_read() -> None:
    table = parse(FULL)
    legacy, search = table.upstreams["legacy"], table.upstreams["search"]
    assert legacy.resilience.first_byte_timeout == 3.0
    assert legacy.resilience.deadline == 20.0
    assert legacy.resilience.max_in_flight == 50
    assert legacy.resilience.retries == RetrySettings(4, 0.01, 0.5, 0.1, 1.0)
    assert legacy.resilience.breaker == BreakerSettings(True, 0.25, 5, 30.0, 60.0, 1)
    assert search.resilience.retries.attempts == 1
    assert not search.resilience.breaker.enabled
    assert table.shedding == Shedding(500, 0.1, 0.4)
    reports, search_route, plain = table.routes
    assert reports.resilience.priority == "background"
    assert reports.resilience.attempts == 2
    assert reports.resilience.retry_methods == frozenset({"GET", "HEAD", "PUT", "DELETE"})
    assert search_route.resilience.priority == "critical"
    assert search_route.resilience.attempts == 1
    assert plain.resilience.retry_methods == frozenset({"GET", "HEAD", "OPTIONS"})


def test_route_timeouts_override_the_upstream_and_fall_back_to_it() -> None:
    table = parse(FULL)
    legacy = table.upstreams["legacy"]
    reports, _, plain = table.routes
    assert timeouts(legacy, reports.resilience) == Timeouts(1.0, 3.0, 10.0, 120.0)
    assert timeouts(legacy, plain.resilience) == Timeouts(1.0, 3.0, 5.0, 20.0)
    # no first_byte_timeout anywhere: the idle `timeout` bounds the head, as it always did
    assert timeouts(table.upstreams["search"]) == Timeouts(5.0, 30.0, 30.0, 60.0)


def test_defaults_are_safe() -> None:
    table = parse(b"upstreams:\n  a: {url: http://127.0.0.1:1, pool: 8}\ndefault: a\n")
    upstream = table.upstreams["a"]
    assert upstream.resilience.retries == RetrySettings(2, 0.025, 1.0, 0.2, 3.0)
    assert upstream.resilience.breaker.enabled
    assert table.shedding == Shedding(1000, 0.2, 0.3)
    plan = AttemptPlan(table, Resilience().state)
    default = plan.defaults["a"]
    assert default.state.max_in_flight == 8  # the pool: no request waits for a connection
    assert (default.priority, default.gateway_cap, default.upstream_cap) == ("normal", 800, 6)


def test_caps_by_priority_round_down() -> None:
    shedding = Shedding(10, 0.2, 0.3)
    assert [shedding.cap(10, p) for p in ("critical", "normal", "background")] == [10, 8, 5]
    assert [shedding.cap(3, p) for p in ("critical", "normal", "background")] == [3, 2, 1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "upstreams:\n  a: {url: 'http://h', deadline: 0s, first_byte_timeout: soon}\n",
            [
                "line 2: upstream 'a': first_byte_timeout: bad duration 'soon' (use e.g. 250ms, 5s, 1m)",
                "line 2: upstream 'a': deadline: '0s' must be longer than 0",
            ],
        ),
        (
            "upstreams:\n  a:\n    url: http://h\n    retries: {attempts: 0, budget: 120%, jitter: full}\n",
            [
                "line 4: upstream 'a': retries: unknown key 'jitter' (expected one of: attempts, backoff, budget, max_backoff, min_per_second)",
                "line 4: upstream 'a': retries: attempts: '0' must be a positive integer",
                "line 4: upstream 'a': retries: budget: '120%' must be between 0 and 1 (or 0% and 100%)",
            ],
        ),
        (
            "upstreams:\n  a:\n    url: http://h\n    breaker: {failure_rate: 0, window: 500ms, cool_down: x}\n",
            [
                "line 4: upstream 'a': breaker: failure_rate: '0' must be more than 0",
                "line 4: upstream 'a': breaker: window: '500ms' must be at least 1s",
                "line 4: upstream 'a': breaker: cool_down: bad duration 'x' (use e.g. 250ms, 5s, 1m)",
            ],
        ),
        (
            "upstreams: {a: {url: 'http://h', breaker: on}}\n",
            ["line 1: upstream 'a': breaker must be a mapping"],
        ),
        (
            "upstreams: {a: {url: 'http://h'}}\nroutes:\n"
            "  - name: r\n    path: /r\n    upstream: a\n    priority: urgent\n"
            "    retries: {methods: [GET, POST, patch]}\n",
            [
                "line 6: route 'r': priority must be one of critical, normal, background (got 'urgent')",
                "line 7: route 'r': retries: POST is not idempotent and is never retried",
                "line 7: route 'r': retries: PATCH is not idempotent and is never retried",
            ],
        ),
        (
            "load_shedding: {max_in_flight: many, reserve: {critical: 60%, normal: 40%}}\n"
            "upstreams: {a: {url: 'http://h'}}\n",
            [
                "line 1: load_shedding: reserve: critical + normal must be under 100%",
                "line 1: load_shedding: max_in_flight: 'many' must be a positive integer",
            ],
        ),
    ],
    ids=["durations", "retries", "breaker", "breaker-on", "route", "shedding"],
)
def test_each_error_is_reported_with_its_line(text: str, expected: list[str]) -> None:
    assert errors_of(text) == expected


def test_upstream_state_survives_a_reload_that_keeps_the_upstream() -> None:
    base = (
        b"upstreams:\n  a: {url: http://127.0.0.1:1}\n  b: {url: http://127.0.0.1:2}\ndefault: a\n"
    )
    first, same = parse(base), parse(base + b"max_body: 1KiB\n")
    changed = parse(base.replace(b"127.0.0.1:2}", b"127.0.0.1:2, breaker: off}"))
    resilience = Resilience()
    a, b = (resilience.plan(first).defaults[name].state for name in "ab")
    assert resilience.plan(same).defaults["a"].state is a  # a new table, the same upstream
    resilience.retain_only(changed)
    assert resilience.plan(changed).defaults["a"].state is a
    fresh = resilience.plan(changed).defaults["b"].state
    assert fresh is not b and fresh.breaker is None  # b's config changed: it starts afresh
    assert set(resilience.states) == set(changed.upstreams.values())
