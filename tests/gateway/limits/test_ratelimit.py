"""Rate limits: one contract suite run on the in-memory and the Redis adapter, exact
timings on the in-memory adapter's injected clock, and the gateway's answers end to end
(429 with Retry-After and the RateLimit fields; one budget shared by two gateways on Redis).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.base.errors import TooManyRequests
from gateway.config.limits import RateLimitSettings
from gateway.config.table import RouteTable, parse
from gateway.limits.gate import Limits
from gateway.limits.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    Usage,
    bucket_name,
    headers,
)
from gateway.request.context import RequestContext
from tests.support.harness import Recorder, get, raw_request, serve_gateway
from tests.support.shared_store import Clock, after, bearer, redis_store, write_routes

pytestmark = pytest.mark.anyio

ALGORITHMS = ["token_bucket", "sliding_window"]


@dataclass
class Adapter:
    limiter: RateLimiter
    clock: Clock | None  # None: Redis, whose own TIME counts


@contextlib.asynccontextmanager
async def redis_limiter(url: str, prefix: str) -> AsyncIterator[RedisRateLimiter]:
    async with redis_store(url, prefix) as store:
        yield RedisRateLimiter(store)


@pytest.fixture(params=["memory", "redis"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
    if request.param == "memory":
        clock = Clock()
        yield Adapter(MemoryRateLimiter(clock), clock)
        return
    url, prefix = request.getfixturevalue("redis_prefix")
    async with redis_limiter(url, prefix) as limiter:
        yield Adapter(limiter, None)


def rule(limit: int, window: float, algorithm: str = "token_bucket") -> RateLimitSettings:
    return RateLimitSettings(limit=limit, window=window, algorithm=algorithm)


# -- the contract: both adapters ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_limit_is_exact_at_the_boundary(adapter: Adapter, algorithm: str) -> None:
    limit = rule(5, 3600, algorithm)
    answers = [await adapter.limiter.hit("b", limit) for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 5 + [False]
    assert [a.remaining for a in answers] == [4, 3, 2, 1, 0, 0]
    denied = answers[-1]
    assert denied.retry_after > 0 and denied.reset == denied.retry_after
    assert all(a.retry_after == 0 for a in answers[:5])
    assert (denied.limit, denied.window) == (5, 3600)
    assert not (await adapter.limiter.hit("b", limit)).allowed  # denied ones take nothing


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_buckets_and_rules_are_separate(adapter: Adapter, algorithm: str) -> None:
    one = rule(1, 3600, algorithm)
    assert (await adapter.limiter.hit("alice", one)).allowed
    assert not (await adapter.limiter.hit("alice", one)).allowed
    assert (await adapter.limiter.hit("bob", one)).allowed
    two = rule(2, 3600, algorithm)  # a changed rule counts under a new name, from zero
    assert bucket_name("r", one, "alice") != bucket_name("r", two, "alice")
    assert (await adapter.limiter.hit(bucket_name("r", two, "alice"), two)).allowed


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_quota_comes_back_after_the_wait_it_announced(
    adapter: Adapter, algorithm: str
) -> None:
    limit = rule(2, 1, algorithm)
    assert (await adapter.limiter.hit("b", limit)).allowed
    assert (await adapter.limiter.hit("b", limit)).allowed
    denied = await adapter.limiter.hit("b", limit)
    assert not denied.allowed and 1 <= denied.retry_after <= 2

    async def passes() -> bool:
        return (await adapter.limiter.hit("b", limit)).allowed

    assert await after(adapter.clock, denied.retry_after, passes)


# -- exact timings on the injected clock --------------------------------------------------


async def test_token_bucket_refills_one_token_per_window_over_limit() -> None:
    clock = Clock(1000.0)
    limiter = MemoryRateLimiter(clock)
    limit = rule(5, 10)  # a token every 2 s
    for _ in range(5):
        assert (await limiter.hit("b", limit)).allowed
    denied = await limiter.hit("b", limit)
    assert (denied.allowed, denied.retry_after, denied.reset) == (False, 2, 2)
    clock.now = 1001.999999
    assert not (await limiter.hit("b", limit)).allowed
    clock.now = 1002.0
    refilled = await limiter.hit("b", limit)
    assert (refilled.allowed, refilled.remaining, refilled.reset) == (True, 0, 2)
    clock.now = 1100.0  # long idle: the bucket is full, not fuller
    answers = [await limiter.hit("b", limit) for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 5 + [False]


async def test_sliding_window_weighs_the_previous_window() -> None:
    clock = Clock(1000.0)  # the start of a 10 s window
    limiter = MemoryRateLimiter(clock)
    limit = rule(10, 10, "sliding_window")
    for _ in range(10):
        assert (await limiter.hit("b", limit)).allowed
    denied = await limiter.hit("b", limit)
    # the next window opens at 1010 with the previous 10 weighing in full; at 1011 they
    # weigh 9, so one request fits
    assert (denied.allowed, denied.retry_after) == (False, 11)
    clock.now = 1010.0
    assert not (await limiter.hit("b", limit)).allowed
    clock.now = 1010.999999
    assert not (await limiter.hit("b", limit)).allowed
    clock.now = 1011.0
    one = await limiter.hit("b", limit)
    assert (one.allowed, one.remaining) == (True, 0)
    assert not (await limiter.hit("b", limit)).allowed
    clock.now = 1015.0  # the previous window weighs 5: four more (one was taken)
    answers = [await limiter.hit("b", limit) for _ in range(5)]
    assert [a.allowed for a in answers] == [True] * 4 + [False]
    clock.now = 1030.0  # two windows on: nothing left of the past
    assert (await limiter.hit("b", limit)).remaining == 9


async def test_idle_counters_are_swept_out() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    for round_ in range(6):  # 1,500 new clients a round, the previous round's gone idle
        for algorithm in ALGORITHMS:
            for i in range(750):
                await limiter.hit(f"client-{round_}-{i}", rule(1, 1, algorithm))
        clock.now += 10
    held = len(limiter._buckets) + len(limiter._windows)
    assert held <= 3 * 1500  # kept: about the active clients, not all 9,000 ever seen


def test_headers_follow_the_current_draft_and_the_older_fields() -> None:
    usage = Usage(allowed=False, limit=5, window=60, remaining=0, reset=12, retry_after=12)
    assert dict(headers("orders", usage)) == {
        b"ratelimit-policy": b'"orders";q=5;w=60',
        b"ratelimit": b'"orders";r=0;t=12',
        b"ratelimit-limit": b"5",
        b"ratelimit-remaining": b"0",
        b"ratelimit-reset": b"12",
        b"retry-after": b"12",
    }
    passed = Usage(allowed=True, limit=5, window=60, remaining=3, reset=12, retry_after=0)
    assert b"retry-after" not in dict(headers("orders", passed))


# -- Redis: shared between replicas, on the server's clock --------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_replicas_share_one_budget_whatever_their_clocks_say(
    redis_prefix: tuple[str, str], algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, prefix = redis_prefix
    limit = rule(5, 3600, algorithm)
    async with redis_limiter(url, prefix) as a, redis_limiter(url, prefix) as b:
        assert all([(await a.hit("k", limit)).allowed for _ in range(3)])
        # replica b's clock is an hour ahead: the counters do not care, Redis's TIME counts
        real = time.time()
        monkeypatch.setattr(time, "time", lambda: real + 3600)
        monkeypatch.setattr(time, "monotonic", lambda: real + 3600)
        assert [(await b.hit("k", limit)).allowed for _ in range(3)] == [True, True, False]
        monkeypatch.undo()
        assert not (await a.hit("k", limit)).allowed


# -- the gateway --------------------------------------------------------------------------


def limited_routes(tmp_path: Path, upstream: str, limit: str, store: str = "") -> Path:
    return write_routes(
        tmp_path / "routes.yaml",
        upstream,
        f"{store}routes:\n"
        f"  - {{name: orders, path: /orders, upstream: legacy, rate_limit: {limit}}}\n"
        "  - {name: free, path: /free, upstream: legacy}\n",
    )


async def test_gateway_answers_429_with_the_rate_limit_fields(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = limited_routes(tmp_path, upstream.url, "{limit: 3, window: 1h}")
    async with serve_gateway(routes) as gw:
        answers = [await raw_request(gw.port, get("/orders")) for _ in range(4)]
        assert [a.status for a in answers] == [200, 200, 200, 429]
        assert [a.header("ratelimit") for a in answers[:3]] == [
            '"orders";r=2;t=1200',
            '"orders";r=1;t=1200',
            '"orders";r=0;t=1200',
        ]
        assert answers[0].header("ratelimit-policy") == '"orders";q=3;w=3600'
        limited = answers[3]
        assert limited.json()["error"] == "rate_limited"
        assert limited.header("content-type") == "application/json"
        assert limited.header("retry-after") == "1200"
        assert limited.header("ratelimit-remaining") == "0"
        assert len(upstream.seen) == 3  # the fourth never reached the upstream
        free = await raw_request(gw.port, get("/free"))
        assert free.status == 200 and free.header("ratelimit") is None
        stats = gw.app.limits.stats.snapshot()
        assert stats["rate_limit"] == {"orders": {"allowed": 3, "limited": 1}}


async def test_keys_by_user_with_anonymous_requests_by_address(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = limited_routes(tmp_path, upstream.url, "{limit: 1, window: 1h, key: user}")
    alice, bob = bearer("alice"), bearer("bob")
    async with serve_gateway(routes) as gw:
        statuses = [
            (await raw_request(gw.port, get("/orders", *extra))).status
            for extra in ([alice], [alice], [bob], [], [])
        ]
    assert statuses == [200, 429, 200, 200, 429]


async def test_keys_by_api_key_header(upstream: Recorder, tmp_path: Path) -> None:
    routes = limited_routes(
        tmp_path, upstream.url, '{limit: 1, window: 1h, key: "header:X-API-Key"}'
    )
    async with serve_gateway(routes) as gw:
        statuses = [
            (await raw_request(gw.port, get("/orders", *extra))).status
            for extra in (["X-API-Key: one"], ["X-API-Key: one"], ["X-API-Key: two"], [])
        ]
    assert statuses == [200, 429, 200, 200]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_two_gateways_on_redis_share_the_limit(
    upstream: Recorder, tmp_path: Path, redis_prefix: tuple[str, str], algorithm: str
) -> None:
    url, prefix = redis_prefix
    store = f'store: {{backend: redis, url: "{url}", prefix: "{prefix}", timeout: 2s}}\n'
    routes = limited_routes(
        tmp_path, upstream.url, f"{{limit: 4, window: 1h, algorithm: {algorithm}}}", store
    )
    async with serve_gateway(routes) as one, serve_gateway(routes) as two:
        statuses = []
        for gw in (one, two, one, two, one, two):
            statuses.append((await raw_request(gw.port, get("/orders"))).status)
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert len(upstream.seen) == 4


async def test_a_reload_keeps_the_counters_unless_it_names_another_store(
    redis_prefix: tuple[str, str],
) -> None:
    url, prefix = redis_prefix

    def table(store: str) -> RouteTable:
        return parse(
            b'upstreams:\n  b: {url: "http://127.0.0.1:9"}\nauth: {default: none}\nauthz: none\n'
            + store.encode()
            + b"routes:\n  - {name: r, path: /r, upstream: b, rate_limit: {limit: 1, window: 1h}}\n"
        )

    async def status(limits: Limits, table: RouteTable) -> int:
        scope = {"method": "GET", "headers": [], "client": ("192.0.2.1", 1)}

        async def unused(*_: Any) -> Any:
            raise AssertionError("a rate limit reads no body and sends nothing itself")

        ctx = RequestContext(scope, table, "i", 0.0, path="/r", route=table.routes[0])
        try:
            admitted = await limits.admit(ctx, unused, unused)
        except TooManyRequests:
            return 429
        assert admitted.stored is None  # forwarded: no idempotency key on this route
        return 200

    memory = table("")
    limits = Limits(memory.store)
    assert [await status(limits, memory) for _ in range(2)] == [200, 429]
    stricter = table("store: {failure: {rate_limit: closed}}\n")
    limits.retain_only(stricter)  # the same store: the same counters, the new policy
    assert await status(limits, stricter) == 429
    assert limits._backend.settings.failure.rate_limit == "closed"
    shared = table(f'store: {{backend: redis, url: "{url}", prefix: "{prefix}"}}\n')
    limits.retain_only(shared)  # another store: its own counters
    assert [await status(limits, shared) for _ in range(2)] == [200, 429]
    assert limits.stats.health.backend == "redis"
    limits.retain_only(memory)  # back in memory, from zero; the Redis client is closed
    assert await status(limits, memory) == 200
    await limits.close()
