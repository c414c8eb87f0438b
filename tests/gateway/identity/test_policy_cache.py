"""The decision cache: hits, TTL on an injected clock, stable keys, no cached errors, LRU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from gateway.identity.decision import Decision, PolicyError
from gateway.identity.decision_cache import MAX_KEY_BYTES, CachedPolicy

pytestmark = pytest.mark.anyio


class FakeEngine:
    """Answers from a script (a Decision, or a PolicyError to raise) and records the inputs."""

    def __init__(self) -> None:
        self.inputs: list[Mapping[str, Any]] = []
        self.script: list[Decision | PolicyError] = []
        self.started = self.closed = False

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        self.inputs.append(input)
        answer = self.script.pop(0) if self.script else Decision(True, None, str(len(self.inputs)))
        if isinstance(answer, PolicyError):
            raise answer
        return answer

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(path: str, **headers: str) -> dict[str, Any]:
    return {
        "attributes": {"request": {"http": {"method": "GET", "path": path, "headers": headers}}},
        "parsed_path": path.strip("/").split("/"),
        "claims": {"sub": "alice"},
    }


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(engine: FakeEngine, clock: Clock) -> CachedPolicy:
    return CachedPolicy(engine, ttl=5, max_entries=100, clock=clock)


async def test_a_repeated_input_is_answered_from_the_cache(
    cache: CachedPolicy, engine: FakeEngine
) -> None:
    first = await cache.decide(request("/products"))
    again = await cache.decide(request("/products"))
    assert again == first and first.decision_id == "1"
    assert len(engine.inputs) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    await cache.decide(request("/orders"))
    assert len(engine.inputs) == 2 and len(cache) == 2


async def test_entries_expire_after_the_ttl(
    cache: CachedPolicy, engine: FakeEngine, clock: Clock
) -> None:
    await cache.decide(request("/products"))  # at 1000.0, ttl 5
    clock.now = 1004.9
    await cache.decide(request("/products"))
    assert len(engine.inputs) == 1
    clock.now = 1005.0
    assert (await cache.decide(request("/products"))).decision_id == "2"
    assert len(engine.inputs) == 2 and len(cache) == 1


async def test_volatile_headers_do_not_split_the_key(
    cache: CachedPolicy, engine: FakeEngine
) -> None:
    sent = request(
        "/products", **{"x-request-id": "a", "traceparent": "00-1-2-01", "accept": "*/*"}
    )
    await cache.decide(sent)
    await cache.decide(request("/products", **{"x-request-id": "b", "accept": "*/*"}))
    await cache.decide(request("/products", **{"tracestate": "v=1", "b3": "1-2", "accept": "*/*"}))
    assert len(engine.inputs) == 1
    assert engine.inputs[0] is sent  # the engine gets the whole input, volatile headers too
    assert sent["attributes"]["request"]["http"]["headers"]["x-request-id"] == "a"
    await cache.decide(request("/products", **{"accept": "text/html"}))  # a stable header
    assert len(engine.inputs) == 2


async def test_errors_are_never_cached(cache: CachedPolicy, engine: FakeEngine) -> None:
    engine.script = [PolicyError("opa down")]
    with pytest.raises(PolicyError):
        await cache.decide(request("/products"))
    assert len(cache) == 0
    assert (await cache.decide(request("/products"))).allow is True
    assert len(engine.inputs) == 2


async def test_denials_are_cached_like_any_decision(
    cache: CachedPolicy, engine: FakeEngine
) -> None:
    engine.script = [Decision(False, "no", "d-1")]
    assert await cache.decide(request("/admin")) == Decision(False, "no", "d-1")
    assert await cache.decide(request("/admin")) == Decision(False, "no", "d-1")
    assert len(engine.inputs) == 1


async def test_least_recently_used_entries_go_first(engine: FakeEngine, clock: Clock) -> None:
    cache = CachedPolicy(engine, ttl=5, max_entries=2, clock=clock)
    await cache.decide(request("/a"))
    await cache.decide(request("/b"))
    await cache.decide(request("/a"))  # a hit: /a is now the most recently used
    await cache.decide(request("/c"))  # evicts /b
    assert len(cache) == 2 and len(engine.inputs) == 3
    await cache.decide(request("/a"))
    assert len(engine.inputs) == 3
    await cache.decide(request("/b"))  # a miss again, which evicts /c
    await cache.decide(request("/c"))
    assert len(engine.inputs) == 5


async def test_clear_forgets_everything(cache: CachedPolicy, engine: FakeEngine) -> None:
    await cache.decide(request("/products"))
    cache.clear()
    await cache.decide(request("/products"))
    assert len(engine.inputs) == 2


async def test_an_input_that_is_not_json_is_a_policy_error(cache: CachedPolicy) -> None:
    with pytest.raises(PolicyError, match="not a JSON document"):
        await cache.decide({"claims": {"when": object()}})


async def test_start_and_close_reach_the_engine(cache: CachedPolicy, engine: FakeEngine) -> None:
    await cache.start()
    await cache.close()
    assert engine.started and engine.closed


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (-1, 10), (5, 0)])
def test_a_cache_needs_a_positive_ttl_and_size(engine: FakeEngine, ttl: float, size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        CachedPolicy(engine, ttl=ttl, max_entries=size)


async def test_a_request_too_large_for_the_cache_is_decided_not_kept(
    cache: CachedPolicy, engine: FakeEngine
) -> None:
    huge = request("/a", **{"x-big": "b" * MAX_KEY_BYTES})
    await cache.decide(huge)
    await cache.decide(huge)
    assert len(cache) == 0 and cache.misses == 2  # asked both times, kept neither
    await cache.decide(request("/a"))
    assert len(cache) == 1
