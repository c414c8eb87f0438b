"""What the shared-store tests share: Redis, a clock, waiting, a routes file with tokens.

Redis is the shared server (each test under its own key prefix, removed afterwards; never
flushed) or a private `redis-server` that a test may kill. The shared server is expected at
127.0.0.1:6379; tests that need it skip when it is unreachable, unless
STRANGLER_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio

from gateway.config.access import StaticKey
from gateway.config.limits import StoreSettings
from gateway.identity.tokens import mint
from gateway.limits.store import RedisStore, StoreHealth

SHARED_URL = "redis://127.0.0.1:6379/0"
READY_DEADLINE = 10.0  # seconds for a started redis-server to answer PING
SECRET = "shared-store-test-secret-0123456789abcdef"
KEY = StaticKey("k", "HS256", SECRET.encode(), dev=True)


def bearer(sub: str, ttl: float = 600) -> str:
    """An Authorization header with a fresh token (and its own jti) for `sub`."""
    return f"Authorization: Bearer {mint(KEY, sub, [], ttl)}"


def write_routes(path: Path, upstream: str, rest: str, auth: str = "optional") -> Path:
    """A routes file: the upstream `legacy` (also the default), tokens signed with KEY, no
    policy, then `rest` (store:, routes:)."""
    path.write_text(
        f'upstreams:\n  legacy: {{url: "{upstream}", timeout: 5s}}\ndefault: legacy\n'
        f"auth:\n  default: {auth}\n  leeway: 5s\n"
        f'  keys: [{{id: k, algorithm: HS256, secret: "{SECRET}", dev: true}}]\n'
        f"authz: none\n{rest}"
    )
    return path


class Clock:
    """The injected clock of the in-memory adapters."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def after(
    clock: Clock | None, seconds: float, condition: Callable[[], Awaitable[bool]]
) -> bool:
    """Whether `condition` holds once `seconds` have passed: on the injected clock (memory
    adapters), or on the real one, polling with a deadline (Redis, whose own clock counts)."""
    if clock is not None:
        clock.now += seconds
        return await condition()
    deadline = time.monotonic() + seconds + 5
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)  # polling a condition, with a deadline
    return True


def unavailable(reason: str) -> None:
    if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def shared_url() -> str:
    client = redis.Redis.from_url(SHARED_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis is unreachable at {SHARED_URL}: {exc}")
    finally:
        client.close()
    return SHARED_URL


def unique_prefix() -> str:
    return f"strangler-test:{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.asynccontextmanager
async def redis_store(url: str, prefix: str) -> AsyncIterator[RedisStore]:
    """The adapters' Redis connection, under the test's own key prefix."""
    settings = StoreSettings(backend="redis", url=url, timeout=2.0, prefix=prefix)
    store = RedisStore(settings, StoreHealth("redis"))
    try:
        yield store
    finally:
        await store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OwnRedis:
    """A redis-server of the test's own, on a free port, to kill and start again."""

    binary: str
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=0.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_DEADLINE
        try:
            while True:
                try:
                    await client.ping()
                    return
                except redis.RedisError:
                    if loop.time() > deadline or self.process.poll() is not None:
                        raise
                await asyncio.sleep(0.02)  # polling for readiness, with a deadline
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no redis-server on PATH")
    assert binary is not None
    return binary
