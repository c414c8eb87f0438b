"""Revoked tokens: one contract suite for the in-memory and the Redis denylist, and
`strangler token revoke` denying a token on every gateway that shares the store."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from gateway.identity.tokens import InMemoryRevocations, RevocationStore, mint
from gateway.limits.revocations import RedisRevocations
from tests.support.harness import Recorder, get, raw_request, serve_gateway
from tests.support.shared_store import KEY, Clock, after, redis_store, write_routes

pytestmark = pytest.mark.anyio


@dataclass
class Adapter:
    store: RevocationStore
    clock: Clock | None  # None: Redis, whose own expiry counts

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()


@pytest.fixture(params=["memory", "redis"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
    if request.param == "memory":
        clock = Clock(time.time())  # revocations expire at a token's exp: wall-clock time
        yield Adapter(InMemoryRevocations(clock=clock), clock)
        return
    async with redis_store(*request.getfixturevalue("redis_prefix")) as store:
        yield Adapter(RedisRevocations(store), None)


async def test_revoked_until_the_token_would_expire(adapter: Adapter) -> None:
    assert not await adapter.store.is_revoked("t-1")
    await adapter.store.revoke("t-1", until=adapter.now() + 0.3)
    await adapter.store.revoke("t-2", until=adapter.now() + 3600)
    assert await adapter.store.is_revoked("t-1")
    assert not await adapter.store.is_revoked("t-3")

    async def expired() -> bool:
        return not await adapter.store.is_revoked("t-1")

    assert await after(adapter.clock, 0.3, expired)  # expired with the token: entry gone
    assert await adapter.store.is_revoked("t-2")


async def test_revoking_an_expired_token_keeps_nothing(adapter: Adapter) -> None:
    await adapter.store.revoke("old", until=adapter.now() - 1)
    assert not await adapter.store.is_revoked("old")


def routes_file(tmp_path: Path, upstream: str, store: str) -> Path:
    return write_routes(tmp_path / "routes.yaml", upstream, store, auth="required")


def revoke(routes: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "token", "revoke", "--routes", str(routes), *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def test_strangler_token_revoke_denies_it_on_every_gateway(
    upstream: Recorder, tmp_path: Path, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    routes = routes_file(
        tmp_path, upstream.url, f'store: {{backend: redis, url: "{url}", prefix: "{prefix}"}}\n'
    )
    stolen, other = mint(KEY, "alice", [], 600), mint(KEY, "alice", [], 600)  # two jtis
    async with serve_gateway(routes) as one, serve_gateway(routes) as two:
        for gw in (one, two):
            assert (
                await raw_request(gw.port, get("/x", f"Authorization: Bearer {stolen}"))
            ).status == 200
        done = revoke(routes, "--token", stolen)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            f"revoked {jwt.decode(stolen, options={'verify_signature': False})['jti']} until "
        )
        for gw in (one, two):  # both had the token verified and cached: revocation still wins
            denied = await raw_request(gw.port, get("/x", f"Authorization: Bearer {stolen}"))
            assert denied.status == 401
            assert "revoked" in denied.json()["detail"]
            fine = await raw_request(gw.port, get("/x", f"Authorization: Bearer {other}"))
            assert fine.status == 200
        by_id = revoke(
            routes, jwt.decode(other, options={"verify_signature": False})["jti"], "--ttl", "10m"
        )
        assert by_id.returncode == 0, by_id.stderr
        assert (
            await raw_request(one.port, get("/x", f"Authorization: Bearer {other}"))
        ).status == 401


def test_revoke_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    memory = routes_file(tmp_path, "http://127.0.0.1:9", "")
    refused = revoke(memory, "some-jti", "--ttl", "1h")
    assert refused.returncode == 1 and "backend: redis" in refused.stderr
    redis = tmp_path / "redis.yaml"
    redis.write_text(memory.read_text() + "store: {backend: redis, url: redis://127.0.0.1:9}\n")
    assert revoke(redis, "some-jti").returncode == 2  # a jti needs --ttl
    assert revoke(redis).returncode == 2
    assert "no jti" in revoke(redis, "--token", jwt.encode({"exp": 1}, "k" * 32)).stderr
    down = revoke(redis, "some-jti", "--ttl", "1h")  # nothing listens on port 9
    assert down.returncode == 1 and "unavailable" in down.stderr
