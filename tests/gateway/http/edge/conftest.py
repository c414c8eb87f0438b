"""The edge's conformance suite: a real gateway between a raw-socket client and recording
upstreams. The invariant every case asserts: an upstream receives only the requests the
gateway decided, each to the upstream it chose, each framed by the gateway; a client
receives exactly one response per request, and every error the gateway makes is JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.wire import Stack, running


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running(tmp_path) as running_stack:
        yield running_stack
