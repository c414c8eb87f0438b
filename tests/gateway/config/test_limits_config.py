"""routes.yaml's `store:`, `rate_limit:` and `idempotency:`: the shape, and every error
reported with its line."""

from __future__ import annotations

import pytest

from common.validation import ConfigError
from gateway.config.limits import FailurePolicy, StoreSettings
from gateway.config.table import limits_summary, parse

HEAD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
auth: {default: none}
authz: none
"""

GOOD = (
    HEAD
    + """\
store:
  backend: redis
  url: redis://127.0.0.1:6379/2
  timeout: 50ms
  cooldown: 2s
  prefix: "shop:"
  failure: {rate_limit: closed, idempotency: open}
routes:
  - name: orders
    path: /orders
    upstream: legacy
    rate_limit: {limit: 100, window: 1m, algorithm: sliding_window, key: "header:X-API-Key"}
    idempotency:
      ttl: 1h
      lock: 30s
      max_response: 64KiB
      methods: [post]
      required: true
      failure: closed
  - name: search
    path: /search
    upstream: legacy
    rate_limit: {limit: 5, window: 1s, key: user, failure: open}
  - name: plain
    path: /plain
    upstream: legacy
"""
)


def test_store_and_route_blocks_parse_into_frozen_settings() -> None:
    table = parse(GOOD.encode(), "routes.yaml")
    assert table.store == StoreSettings(
        backend="redis",
        url="redis://127.0.0.1:6379/2",
        timeout=0.05,
        cooldown=2.0,
        prefix="shop:",
        failure=FailurePolicy(rate_limit="closed", idempotency="open", revocation="closed"),
    )
    orders, search, plain = table.routes
    assert orders.limits is not None and search.limits is not None
    rule = orders.limits.rate_limit
    assert rule is not None
    assert (rule.limit, rule.window, rule.algorithm, rule.key, rule.header) == (
        100,
        60.0,
        "sliding_window",
        "header",
        b"x-api-key",
    )
    keys = orders.limits.idempotency
    assert keys is not None
    assert (keys.ttl, keys.lock, keys.max_response, keys.methods, keys.required) == (
        3600.0,
        30.0,
        65536,
        frozenset({"POST"}),
        True,
    )
    assert keys.failure == "closed"
    assert search.limits.rate_limit is not None and search.limits.idempotency is None
    assert search.limits.rate_limit.algorithm == "token_bucket"
    assert search.limits.rate_limit.failure == "open"
    assert plain.limits is None  # the request path's one check: nothing else to pay


def test_defaults_are_memory_and_the_issue_failure_policies() -> None:
    table = parse(
        (HEAD + "routes:\n  - {name: a, path: /a, upstream: legacy, idempotency: {}}\n").encode()
    )
    assert table.store == StoreSettings()
    assert table.store.failure == FailurePolicy("open", "closed", "closed")
    route = table.routes[0]
    assert route.limits is not None and route.limits.idempotency is not None
    assert route.limits.idempotency.methods == frozenset({"POST", "PUT", "PATCH", "DELETE"})
    assert route.limits.idempotency.ttl == 86400.0


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse((HEAD + text).encode(), "routes.yaml")
    return [str(issue) for issue in info.value.issues]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("store: {backend: redis}\n", ["line 5: store: backend redis needs a url"]),
        ("store: {backend: disk}\n", ["line 5: store: backend must be one of memory, redis"]),
        ("store: {url: redis://x}\n", ["line 5: store: url is for backend: redis"]),
        (
            "store: {backend: redis, url: http://x}\n",
            ["line 5: store: url: 'http://x' must be a redis://"],
        ),
        ("store: {timeout: 0s}\n", ["line 5: store: timeout: '0s' must be longer than 0"]),
        (
            "store: {failure: {rate_limit: maybe}}\n",
            ["line 5: store: failure: rate_limit must be one of open, closed"],
        ),
        ("store: {failure: {shadow: open}}\n", ["line 5: store: failure: unknown key 'shadow'"]),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy, rate_limit: {window: 1s}}\n",
            ["line 6: route 'a': rate_limit: missing 'limit'"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy,"
            " rate_limit: {limit: 0, window: 1s}}\n",
            ["line 6: route 'a': rate_limit: limit: '0' must be a positive integer"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy,"
            " rate_limit: {limit: 1, window: 1500ms}}\n",
            ["line 6: route 'a': rate_limit: window: '1500ms' must be a whole number of seconds"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy,"
            " rate_limit: {limit: 1, window: 1s, key: cookie}}\n",
            ["line 6: route 'a': rate_limit: key: 'cookie' must be user, ip or header:NAME"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy,"
            " rate_limit: {limit: 1, window: 1s, algorithm: leaky}}\n",
            ["line 6: route 'a': rate_limit: algorithm must be one of token_bucket"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy,"
            " rate_limit: {limit: 1000000000, window: 24h}}\n",
            ["line 6: route 'a': rate_limit: limit x window is too large to count exactly"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy, idempotency: {methods: [GET]}}\n",
            ["line 6: route 'a': idempotency: 'GET' is not an unsafe method"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy, idempotency: {ttl: soon}}\n",
            ["line 6: route 'a': idempotency: ttl: bad duration 'soon'"],
        ),
        (
            "routes:\n  - {name: a, path: /a, upstream: legacy, idempotency: {failure: later}}\n",
            ["line 6: route 'a': idempotency: failure must be one of open, closed"],
        ),
    ],
)
def test_each_error_is_reported_with_its_line(text: str, expected: list[str]) -> None:
    errors = errors_of(text)
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), errors


def test_the_url_can_come_from_the_environment_and_is_shown_without_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_REDIS", "redis://:s3cret@redis.internal:6379/1")
    table = parse((HEAD + "store: {backend: redis, url_env: SHOP_REDIS}\n").encode())
    assert table.store.url == "redis://:s3cret@redis.internal:6379/1"
    assert limits_summary(table) == (["store: redis (redis://:***@redis.internal:6379/1)"], [])
    monkeypatch.setenv("SHOP_REDIS", "http://:s3cret@x")
    assert errors_of("store: {backend: redis, url_env: SHOP_REDIS}\n") == [
        "line 5: store: $SHOP_REDIS: 'http://:***@x' must be a redis://, rediss:// or unix:// URL"
    ]
    assert errors_of("store: {backend: redis, url_env: NOT_SET_ANYWHERE}\n") == [
        "line 5: store: environment variable 'NOT_SET_ANYWHERE' is not set"
    ]
    assert errors_of("store: {backend: redis, url: redis://x, url_env: SHOP_REDIS}\n") == [
        "line 5: store: give either url or url_env"
    ]


def test_routes_check_summary_lists_the_limits_and_warns_about_user_keys_without_tokens() -> None:
    table = parse(GOOD.encode())
    lines, warnings = limits_summary(table)
    assert lines == [
        "store: redis (redis://127.0.0.1:6379/2)",
        "rate limit: orders 100 per 60s, sliding_window, by header x-api-key (store down: closed)",
        "idempotency: orders POST, answers kept 3600s (store down: closed)",
        "rate limit: search 5 per 1s, token_bucket, by user (store down: open)",
    ]
    assert warnings == [
        "warning: route 'search' limits by user but takes no token (auth: none): every"
        " request is counted by client IP"
    ]
    assert limits_summary(parse(HEAD.encode())) == ([], [])  # nothing to say, nothing said


def test_every_error_is_reported_not_just_the_first() -> None:
    errors = errors_of(
        "store: {backend: redis, cooldown: never}\n"
        "routes:\n"
        "  - name: a\n"
        "    path: /a\n"
        "    upstream: legacy\n"
        "    rate_limit: {limit: -1, window: 1s, key: 'header:'}\n"
        "    idempotency: {max_response: lots, required: maybe}\n"
    )
    assert [e.split(":", 1)[0] for e in errors] == ["line 5"] * 2 + ["line 10"] * 2 + [
        "line 11"
    ] * 2
