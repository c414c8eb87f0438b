"""The shared-store failure policy: a redis-server of the test's own, killed (and frozen)
mid-test. Each feature follows its declared policy, no request waits past the store's
timeout, and once Redis is back every feature recovers by itself."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.support.harness import Gateway, RawResponse, Recorder, get, raw_request, serve_gateway
from tests.support.shared_store import OwnRedis, bearer, write_routes

pytestmark = pytest.mark.anyio

# A request bounded by the store's 200 ms timeout ends well within this; a hang does not.
NO_HANG = 10.0


def routes_file(tmp_path: Path, upstream: str, redis: str) -> Path:
    return write_routes(
        tmp_path / "routes.yaml",
        upstream,
        f'store: {{backend: redis, url: "{redis}", timeout: 200ms, cooldown: 100ms}}\n'
        "routes:\n"
        "  - {name: lenient, path: /lenient, upstream: legacy,"
        " rate_limit: {limit: 100, window: 1h}}\n"
        "  - {name: strict, path: /strict, upstream: legacy,"
        " rate_limit: {limit: 100, window: 1h, failure: closed}}\n"
        "  - {name: orders, path: /orders, upstream: legacy, idempotency: {}}\n"
        "  - {name: drafts, path: /drafts, upstream: legacy, idempotency: {failure: open}}\n",
    )


def post(path: str, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        f"Idempotency-Key: {key}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()


async def request(gw: Gateway, head: bytes) -> RawResponse:
    async with asyncio.timeout(NO_HANG):
        return await raw_request(gw.port, head)


async def outcomes(gw: Gateway, token: str, key: str) -> dict[str, tuple[int, str | None]]:
    """What each feature answers now: (status, error code or RateLimit field); `token`: an
    Authorization header."""
    answers = {
        "rate limit, open": await request(gw, get("/lenient")),
        "rate limit, closed": await request(gw, get("/strict")),
        "idempotency, closed": await request(gw, post("/orders", key)),
        "idempotency, open": await request(gw, post("/drafts", key)),
        "revocation, closed": await request(gw, get("/other", token)),
        "anonymous": await request(gw, get("/other")),
    }
    return {
        name: (
            a.status,
            a.json()["error"] if a.status >= 400 else a.header("ratelimit") and "counted",
        )
        for name, a in answers.items()
    }


UP = {
    "rate limit, open": (200, "counted"),
    "rate limit, closed": (200, "counted"),
    "idempotency, closed": (200, None),
    "idempotency, open": (200, None),
    "revocation, closed": (200, None),
    "anonymous": (200, None),
}
DOWN = {
    "rate limit, open": (200, None),  # passed, uncounted
    "rate limit, closed": (503, "store_unavailable"),
    "idempotency, closed": (503, "store_unavailable"),
    "idempotency, open": (200, None),  # ran without the guarantee
    "revocation, closed": (503, "store_unavailable"),
    "anonymous": (200, None),  # no token, no denylist to ask
}


async def recovered(gw: Gateway, token: str) -> dict[str, tuple[int, str | None]]:
    deadline = time.monotonic() + NO_HANG
    while True:  # the cooldown passes, a request finds Redis back: poll until it has
        now = await outcomes(gw, token, f"after-{time.monotonic()}")
        if now == UP or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.05)


async def test_each_feature_follows_its_policy_while_redis_is_down(
    upstream: Recorder, tmp_path: Path, own_redis: OwnRedis
) -> None:
    token = bearer("alice")  # with a jti: the denylist is asked
    async with serve_gateway(routes_file(tmp_path, upstream.url, own_redis.url)) as gw:
        assert await outcomes(gw, token, "before") == UP
        own_redis.kill()
        assert await outcomes(gw, token, "while-down") == DOWN
        assert await outcomes(gw, token, "still-down") == DOWN  # in the cooldown: at once
        health = gw.app.limits.stats.health
        assert not health.up and health.last_error is not None
        assert set(health.failures) == {"rate_limit", "idempotency", "revocation"}
        strict = await request(gw, get("/strict"))
        assert strict.header("retry-after") == "1"
        counts = gw.app.limits.stats.snapshot()
        assert counts["rate_limit"]["lenient"]["failed_open"] == 2
        assert counts["idempotency"]["orders"]["failed_closed"] == 2
        assert counts["revocation"]["-"]["failed_closed"] >= 2

        await own_redis.start()
        assert await recovered(gw, token) == UP
        assert gw.app.limits.stats.health.up
        first = await request(gw, post("/orders", "again"))
        replay = await request(gw, post("/orders", "again"))
        assert replay.header("idempotent-replayed") == "true" and replay.body == first.body


async def test_a_frozen_redis_costs_each_request_at_most_the_timeout(
    upstream: Recorder, tmp_path: Path, own_redis: OwnRedis
) -> None:
    """SIGSTOP: connections are accepted, nothing is answered; the timeout must cut it."""
    token = bearer("alice")
    async with serve_gateway(routes_file(tmp_path, upstream.url, own_redis.url)) as gw:
        assert await outcomes(gw, token, "before") == UP
        assert own_redis.process is not None
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            assert await outcomes(gw, token, "frozen") == DOWN
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        assert await recovered(gw, token) == UP
