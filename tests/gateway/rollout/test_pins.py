"""The pin port (gateway/rollout/pins.py): one contract suite for the in-memory and the Redis adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.base.errors import StoreUnavailable
from gateway.config.limits import StoreSettings
from gateway.limits.store import RedisStore, StoreHealth
from gateway.rollout.pins import ANY, MemoryPins, PinStore, RedisPins
from tests.support.shared_store import Clock, after, redis_store

pytestmark = pytest.mark.anyio


@dataclass
class Adapter:
    pins: PinStore
    clock: Clock | None  # None: Redis, whose own expiry counts


@pytest.fixture(params=["memory", "redis"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
    if request.param == "memory":
        clock = Clock()
        yield Adapter(MemoryPins(clock), clock)
        return
    async with redis_store(*request.getfixturevalue("redis_prefix")) as store:
        yield Adapter(RedisPins(store), None)


async def test_a_pin_holds_what_was_written(adapter: Adapter) -> None:
    assert await adapter.pins.get("sub:alice") is None
    await adapter.pins.add("sub:alice", {"public.products": 42}, ttl=60)
    assert await adapter.pins.get("sub:alice") == {"public.products": 42}
    assert await adapter.pins.get("sub:bob") is None  # other users are not pinned


async def test_writes_merge_and_the_higher_position_wins(adapter: Adapter) -> None:
    await adapter.pins.add("sub:alice", {"public.products": 42, "public.categories": 7}, ttl=60)
    await adapter.pins.add("sub:alice", {"public.products": 41}, ttl=60)  # older: kept out
    await adapter.pins.add("sub:alice", {"public.categories": 9, ANY: 0}, ttl=60)
    assert await adapter.pins.get("sub:alice") == {
        "public.products": 42,
        "public.categories": 9,
        ANY: 0,
    }


async def test_positions_keep_their_order_beyond_a_double(adapter: Adapter) -> None:
    """LSNs are 64-bit; Redis's Lua numbers are doubles, so they must not pass through one."""
    big = 2**63 + 1
    await adapter.pins.add("sub:alice", {"public.products": big}, ttl=60)
    await adapter.pins.add("sub:alice", {"public.products": big - 1}, ttl=60)
    await adapter.pins.add("sub:alice", {"public.categories": 99}, ttl=60)
    await adapter.pins.add("sub:alice", {"public.categories": 100}, ttl=60)  # more digits
    assert await adapter.pins.get("sub:alice") == {
        "public.products": big,
        "public.categories": 100,
    }


async def test_a_pin_ends_a_window_after_the_last_write(adapter: Adapter) -> None:
    await adapter.pins.add("sub:alice", {ANY: 0}, ttl=0.4)
    await adapter.pins.add("sub:bob", {ANY: 0}, ttl=60)

    async def gone() -> bool:
        return await adapter.pins.get("sub:alice") is None

    assert await after(adapter.clock, 0.4, gone)
    assert await adapter.pins.get("sub:bob") == {ANY: 0}
    # A write after the pin ended starts afresh: nothing of the old pin comes back.
    await adapter.pins.add("sub:alice", {"public.products": 3}, ttl=60)
    assert await adapter.pins.get("sub:alice") == {"public.products": 3}


async def test_each_write_starts_the_window_again() -> None:
    clock = Clock()
    pins = MemoryPins(clock)
    await pins.add("sub:alice", {"public.products": 1}, ttl=5)
    clock.now += 4
    await pins.add("sub:alice", {"public.products": 2}, ttl=5)
    clock.now += 4  # 8 s after the first write, 4 after the second
    assert await pins.get("sub:alice") == {"public.products": 2}
    clock.now += 1
    assert await pins.get("sub:alice") is None


async def test_memory_sweeps_out_the_pins_of_users_who_left() -> None:
    clock = Clock()
    pins = MemoryPins(clock)
    for n in range(100):
        await pins.add(f"sub:user-{n}", {ANY: 0}, ttl=5)
    clock.now += 6
    await pins.add("sub:late", {ANY: 0}, ttl=5)
    assert len(pins) == 1


async def test_redis_failures_arrive_as_store_unavailable() -> None:
    settings = StoreSettings(backend="redis", url="redis://127.0.0.1:1/0", timeout=0.2)
    store = RedisStore(settings, StoreHealth("redis"))
    pins = RedisPins(store)
    try:
        with pytest.raises(StoreUnavailable):
            await pins.get("sub:alice")
        with pytest.raises(StoreUnavailable):
            await pins.add("sub:alice", {ANY: 0}, ttl=5)
        assert store.health.failures["read_your_writes"] == 2
    finally:
        await store.close()
