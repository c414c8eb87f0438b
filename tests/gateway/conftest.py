"""Fixtures for the gateway's tests: real servers on loopback, no mocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness import Gateway, Recorder, serve_gateway, serve_upstream, write_routes


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
