"""The guard's decision-cache key: everything the policy input is built from, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gateway.config.access import AuthSettings
from gateway.identity.decision import Decision
from gateway.identity.decision_cache import CachedPolicy
from gateway.identity.guard import Guard
from gateway.identity.tokens import InMemoryRevocations

pytestmark = pytest.mark.anyio


class CountingPolicy:
    def __init__(self) -> None:
        self.inputs: list[Mapping[str, Any]] = []

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        self.inputs.append(input)
        return Decision(allow=input["parsed_path"] != ["deny"])

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def scope(path: str = "/x", **headers: str) -> dict[str, Any]:
    return {
        "method": "GET",
        "query_string": b"",
        "scheme": "http",
        "client": ("10.0.0.1", 1234),
        "headers": [(b"host", b"h"), *((k.encode(), v.encode()) for k, v in headers.items())],
        "path": path,
    }


async def test_volatile_headers_share_a_decision_and_the_rest_do_not() -> None:
    guard = Guard(AuthSettings(default="none"), None, InMemoryRevocations())
    counting = CountingPolicy()
    guard.engine = CachedPolicy(counting, ttl=60, max_entries=100)

    async def ask(path: str = "/x", **headers: str) -> bool:
        verdict = await guard.check(scope(path, **headers), path, "none", "r", "legacy", False)
        return verdict.denial is None

    assert await ask(**{"x-request-id": "1"}) and await ask(**{"x-request-id": "2"})
    assert await ask(traceparent="00-abc")
    assert len(counting.inputs) == 1  # request ids and trace headers do not split the key
    assert await ask(accept="text/html")
    assert await ask("/y")
    assert not await ask("/deny")
    assert not await ask("/deny")
    assert len(counting.inputs) == 4
    assert counting.inputs[1]["attributes"]["request"]["http"]["headers"]["accept"] == "text/html"
