"""Redis for the shared-store tests: the shared server (each test under its own key prefix,
removed afterwards; never flushed) or a private `redis-server` that a test may kill.

The shared server is expected at 127.0.0.1:6379. Tests that need it skip when it is
unreachable, unless STRANGLER_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass, field

import pytest
import redis
import redis.asyncio

SHARED_URL = "redis://127.0.0.1:6379/0"
READY_DEADLINE = 10.0  # seconds for a started redis-server to answer PING


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
