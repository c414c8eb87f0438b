"""Rate limits: the two algorithms, the `RateLimiter` port and its two adapters.

Both algorithms count in integers, requests x microseconds, so that a limit is exact at
its boundary (the 100th request of a 100-per-minute limit passes, the 101st does not) and
the in-memory adapter and the Redis Lua scripts agree to the microsecond:

- token bucket: a bucket of `limit` tokens, refilled continuously at limit/window; a
  request takes one. State: the level (scaled by the window) and when it was computed.
- sliding-window counter: counts per fixed window, and the estimate
  previous x (share of the window still to run) + current, which must stay within the
  limit (Cloudflare's approximation of a true sliding log, two integers per key).

Redis runs each check as one Lua script (atomic: no two replicas can both take the last
token) and reads the time with TIME inside it, so replicas whose clocks disagree still
share one clock. The answers are turned into the headers of
draft-ietf-httpapi-ratelimit-headers-11 (`RateLimit-Policy`, `RateLimit`) and the
`RateLimit-Limit/-Remaining/-Reset` of its drafts up to -06, which many clients read.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from gateway.config.limits import RateLimitSettings
from gateway.limits.store import RedisStore

_US = 1_000_000


class Usage(NamedTuple):
    """One check's answer, in the units of the response headers (whole seconds)."""

    allowed: bool
    limit: int
    window: int
    remaining: int
    reset: int  # seconds until the quota next grows; with nothing left, = retry_after
    retry_after: int  # seconds until a request would pass (0 when this one passed)


class RateLimiter(Protocol):
    async def hit(self, bucket: str, rule: RateLimitSettings) -> Usage:
        """Count one request against `bucket` (route and client) under `rule`."""
        ...


def bucket_name(route: str, rule: RateLimitSettings, client: str) -> str:
    """The counter's name: a changed rule starts new counters."""
    return f"{route}:{rule.algorithm}:{rule.limit}:{rule.window}:{client}"


def api_key_client(value: bytes) -> str:
    """An API key as a client name: hashed, so that no store holds the key itself."""
    return "key:" + hashlib.blake2b(value, digest_size=16).hexdigest()


def headers(route: str, usage: Usage) -> list[tuple[bytes, bytes]]:
    name = route.encode()
    out = [
        (b"ratelimit-policy", b'"%s";q=%d;w=%d' % (name, usage.limit, usage.window)),
        (b"ratelimit", b'"%s";r=%d;t=%d' % (name, usage.remaining, usage.reset)),
        (b"ratelimit-limit", b"%d" % usage.limit),
        (b"ratelimit-remaining", b"%d" % usage.remaining),
        (b"ratelimit-reset", b"%d" % usage.reset),
    ]
    if not usage.allowed:
        out.append((b"retry-after", b"%d" % usage.retry_after))
    return out


def _seconds(us: int) -> int:
    return -(-us // _US)


# -- token bucket -------------------------------------------------------------------------


def bucket_step(
    limit: int, window: int, state: tuple[int, int] | None, now: int
) -> tuple[bool, int, int]:
    """(allowed, level, last) after one request at `now`; the level counts tokens x window."""
    full = limit * window
    if state is None:
        level, last = full, now
    else:
        level, last = state
        if now > last:
            level, last = min(full, level + (now - last) * limit), now
    if level >= window:
        return True, level - window, last
    return False, level, last


def bucket_usage(rule: RateLimitSettings, allowed: bool, level: int) -> Usage:
    window = rule.window_us
    remaining = level // window
    # the next token arrives when the level reaches (remaining + 1) x window
    wait = _seconds(-(-((remaining + 1) * window - level) // rule.limit))
    return Usage(allowed, rule.limit, rule.window, remaining, wait, 0 if allowed else wait)


_BUCKET_LUA = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local full = limit * window
local state = redis.call('HMGET', KEYS[1], 'level', 'last')
local level, last = tonumber(state[1]), tonumber(state[2])
if level == nil then
  level, last = full, now
elseif now > last then
  level, last = math.min(full, level + (now - last) * limit), now
end
local allowed = 0
if level >= window then
  allowed, level = 1, level - window
end
redis.call('HSET', KEYS[1], 'level', string.format('%.0f', level),
           'last', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], math.ceil((full - level) / limit / 1000) + 1)
return {allowed, string.format('%.0f', level)}
"""


# -- sliding-window counter ---------------------------------------------------------------


def sliding_step(
    limit: int, window: int, state: tuple[int, int, int] | None, now: int
) -> tuple[bool, tuple[int, int, int], int]:
    """(allowed, (window index, current, previous), elapsed in the window) at `now`."""
    index, elapsed = divmod(now, window)
    current = previous = 0
    if state is not None:
        seen, count, before = state
        if seen == index:
            current, previous = count, before
        elif seen == index - 1:
            previous = count
        elif seen > index:  # the server's clock went back: stay in the window it was in
            index, elapsed, current, previous = seen, 0, count, before
    allowed = previous * (window - elapsed) + (current + 1) * window <= limit * window
    if allowed:
        current += 1
    return allowed, (index, current, previous), elapsed


def _sliding_wait(limit: int, window: int, previous: int, current: int, elapsed: int) -> int:
    """Microseconds until one more request fits."""
    spare = (limit - current - 1) * window
    if spare >= 0:  # fits in this window once enough of the previous one has slid out
        return max(0, window - elapsed - spare // previous) if previous else 0
    # this window alone is full: wait for the next, where it becomes the previous one
    return window - elapsed + max(0, window - (limit - 1) * window // current)


def sliding_usage(
    rule: RateLimitSettings, allowed: bool, previous: int, current: int, elapsed: int
) -> Usage:
    window, limit = rule.window_us, rule.limit
    used = previous * (window - elapsed) + current * window
    remaining = max(0, (limit * window - used) // window)
    wait = _seconds(_sliding_wait(limit, window, previous, current, elapsed))
    reset = _seconds(window - elapsed) if remaining else wait
    return Usage(allowed, limit, rule.window, remaining, reset, 0 if allowed else wait)


_SLIDING_LUA = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local elapsed = now % window
local index = (now - elapsed) / window
local state = redis.call('HMGET', KEYS[1], 'index', 'current', 'previous')
local seen = tonumber(state[1])
local current, previous = 0, 0
if seen == index then
  current, previous = tonumber(state[2]), tonumber(state[3])
elseif seen == index - 1 then
  previous = tonumber(state[2])
elseif seen ~= nil and seen > index then
  index, elapsed = seen, 0
  current, previous = tonumber(state[2]), tonumber(state[3])
end
local allowed = 0
if previous * (window - elapsed) + (current + 1) * window <= limit * window then
  allowed, current = 1, current + 1
  redis.call('HSET', KEYS[1], 'index', string.format('%.0f', index),
             'current', current, 'previous', previous)
  redis.call('PEXPIRE', KEYS[1], math.ceil((2 * window - elapsed) / 1000))
end
return {allowed, previous, current, string.format('%.0f', elapsed)}
"""


# -- adapters -----------------------------------------------------------------------------


class MemoryRateLimiter:
    """One replica's counters. Keys whose state has gone back to "fresh" are swept out
    now and then, so memory follows the clients active within a window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[int, int, int]] = {}  # level, last, expires
        self._windows: dict[str, tuple[tuple[int, int, int], int]] = {}  # state, expires
        self._sweep_at = 1024

    async def hit(self, bucket: str, rule: RateLimitSettings) -> Usage:
        now = round(self.clock() * _US)
        if len(self._buckets) + len(self._windows) >= self._sweep_at:
            self._sweep(now)
        window = rule.window_us
        if rule.algorithm == "token_bucket":
            held = self._buckets.get(bucket)
            allowed, level, last = bucket_step(rule.limit, window, held[:2] if held else None, now)
            refilled = last + -(-(rule.limit * window - level) // rule.limit)
            self._buckets[bucket] = (level, last, refilled)
            return bucket_usage(rule, allowed, level)
        entry = self._windows.get(bucket)
        allowed, state, elapsed = sliding_step(rule.limit, window, entry[0] if entry else None, now)
        self._windows[bucket] = (state, (state[0] + 2) * window)
        return sliding_usage(rule, allowed, state[2], state[1], elapsed)

    def _sweep(self, now: int) -> None:
        self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        self._sweep_at = max(1024, 2 * (len(self._buckets) + len(self._windows)))


class RedisRateLimiter:
    """Counters shared by every replica: one script call per check."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._bucket = store.client.register_script(_BUCKET_LUA)
        self._sliding = store.client.register_script(_SLIDING_LUA)

    async def hit(self, bucket: str, rule: RateLimitSettings) -> Usage:
        key = self.store.key("rl", bucket)
        token_bucket = rule.algorithm == "token_bucket"
        script = self._bucket if token_bucket else self._sliding
        reply: list[bytes | int] = await self.store.run(
            "rate_limit",
            lambda client: script(keys=[key], args=(rule.limit, rule.window_us), client=client),
        )
        numbers = [int(value) for value in reply]
        if token_bucket:
            return bucket_usage(rule, bool(numbers[0]), numbers[1])
        allowed, previous, current, elapsed = numbers
        return sliding_usage(rule, bool(allowed), previous, current, elapsed)
