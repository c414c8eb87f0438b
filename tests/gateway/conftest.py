"""Fixtures for the gateway's tests: real servers on loopback, no mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import shared_store
from tests.support.harness import Gateway, Recorder, serve_gateway, serve_upstream, write_routes


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[Recorder]:
    async with serve_upstream() as recorder:
        yield recorder


@pytest.fixture
async def gateway(upstream: Recorder, tmp_path: Path) -> AsyncIterator[Gateway]:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f"""
upstreams:
  legacy: {{url: "{upstream.url}", timeout: 2s}}
  search: {{url: "{upstream.url}", timeout: 2s}}
default: legacy
max_body: 1MiB
routes:
  - name: search
    path: /search
    methods: [GET]
    upstream: search
  - name: api
    path: /api
    upstream: legacy
    rewrite: /v2
  - name: strip
    path: /strip
    upstream: legacy
    strip_prefix: true
  - name: big
    path: /big
    upstream: legacy
    max_body: 64MiB
""",
    )
    async with serve_gateway(routes) as gw:
        yield gw


# -- Redis, for the shared store's adapters (tests/gateway/shared_store.py) ---------------


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    """(url, key prefix) on the shared Redis; the prefix's keys are deleted afterwards."""
    url = shared_store.shared_url()
    prefix = shared_store.unique_prefix()
    yield url, prefix
    shared_store.delete_prefix(url, prefix)


@pytest.fixture
async def own_redis() -> AsyncIterator[shared_store.OwnRedis]:
    """A redis-server of this test's own, started; the test may kill and restart it."""
    server = shared_store.OwnRedis(shared_store.redis_server_binary())
    await server.start()
    try:
        yield server
    finally:
        server.kill()
