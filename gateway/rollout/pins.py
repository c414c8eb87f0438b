"""Who is pinned to the monolith after a write, and until which positions: the pin port.

A pin is kept per user (the token's `sub`; anonymous users by their sticky key) as a map
from source table (`public.products`) to the commit position the user's last write there
must reach in the new service's database; `ANY` stands for a write whose positions are
unknown (window mode, or a monolith that did not say), which pins every CDC-fed read. A
pin lives for the section's `window` after the user's last write: each write merges its
positions in (the higher one per table wins) and starts the window again.

Two adapters, chosen by the routes file's `store:` backend, with one contract suite:
`MemoryPins` (one gateway process) and `RedisPins` (every replica agrees; one round trip
per lookup, one Lua script per write, expiry by Redis's own clock). Redis errors arrive as
`StoreUnavailable` (gateway/limits/store.py), for the caller's failure policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from redis.asyncio import Redis

from gateway.limits.store import RedisStore, unexpired

ANY = "*"  # positions unknown: pinned for every CDC-fed read until the pin expires
FEATURE = "read_your_writes"  # how the shared store counts this feature's failures
Positions = dict[str, int]
_DIGITS = 20  # 2**64 has 20 digits: padded, positions compare as strings in Lua


class PinStore(Protocol):
    async def add(self, subject: str, positions: Mapping[str, int], ttl: float) -> None:
        """Merge `positions` into the subject's pin and keep it `ttl` seconds from now."""

    async def get(self, subject: str) -> Positions | None:
        """The subject's live pin, or None."""


class MemoryPins:
    """Pins of one gateway process. Expired pins are dropped when read, and all of them
    at most once per `ttl` when pins are added, so idle users do not accumulate."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._pins: dict[str, tuple[float, Positions]] = {}
        self._swept_at = clock()

    def __len__(self) -> int:
        return len(self._pins)

    async def add(self, subject: str, positions: Mapping[str, int], ttl: float) -> None:
        now = self.clock()
        if now - self._swept_at >= ttl:
            self._pins = {k: pin for k, pin in self._pins.items() if pin[0] > now}
            self._swept_at = now
        held = self._pins.get(subject)
        merged = dict(held[1]) if held is not None and held[0] > now else {}
        for table, position in positions.items():
            merged[table] = max(position, merged.get(table, position))
        self._pins[subject] = (now + ttl, merged)

    async def get(self, subject: str) -> Positions | None:
        held = unexpired(self._pins, subject, _deadline, self.clock())
        return None if held is None else held[1]


# KEYS[1] the pin (a hash: table -> zero-padded position); ARGV[1] its ttl in ms, then
# table, position pairs. Equal-length digit strings compare as the numbers do.
_ADD = """
for i = 2, #ARGV, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if not held or held < ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisPins:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._add = store.client.register_script(_ADD)

    async def add(self, subject: str, positions: Mapping[str, int], ttl: float) -> None:
        args: list[str | int] = [max(1, round(ttl * 1000))]
        for table, position in positions.items():
            args += [table, str(position).zfill(_DIGITS)]
        key = self.store.key("ryw", subject)

        async def call(client: Redis) -> object:
            return await self._add(keys=[key], args=args, client=client)

        await self.store.run(FEATURE, call)

    async def get(self, subject: str) -> Positions | None:
        key = self.store.key("ryw", subject)
        held = await self.store.run(FEATURE, lambda client: client.hgetall(key))
        # redis-py types the fields as bytes | str; without decode_responses they are bytes
        return {_text(table): int(position) for table, position in held.items()} or None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _deadline(pin: tuple[float, Positions]) -> float:
    return pin[0]
