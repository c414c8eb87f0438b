"""The shared store's Redis connection: short timeouts, a cooldown, one error type.

Every Redis call of every feature (rate limits, idempotency keys, revoked tokens) goes
through `RedisStore.run`, which gives it a hard deadline (`timeout`) and translates
whatever redis-py or the socket raised into `StoreUnavailable`. After a failure the store
is not asked again for `cooldown` seconds: the features apply their failure policy at once
instead of each request waiting out a timeout against a dead server. redis-py's own
retries are off: a retry with backoff is exactly the hang this module exists to prevent.

`StoreHealth` holds what a dashboard wants at scrape time: up or down, since when,
failures per feature, the last error. Transitions are logged once, not once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.base.errors import StoreUnavailable
from gateway.config.limits import StoreSettings, redacted

log = logging.getLogger("strangler.store")
_E = TypeVar("_E")
T = TypeVar("T")


@dataclass
class StoreHealth:
    backend: str = "memory"
    up: bool = True
    since: float = field(default_factory=time.time)  # of the current state
    failures: Counter[str] = field(default_factory=Counter)  # per feature
    last_error: str | None = None

    def snapshot(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "up": self.up,
            "since": self.since,
            "failures": dict(self.failures),
            "last_error": self.last_error,
        }


class RedisStore:
    def __init__(self, settings: StoreSettings, health: StoreHealth) -> None:
        assert settings.url is not None
        self.settings = settings
        self.health = health
        # No I/O here: redis-py connects on the first command.
        self.client = Redis.from_url(
            settings.url,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._quiet_until = 0.0  # monotonic; calls before it fail without asking Redis

    def key(self, *parts: str) -> str:
        return self.settings.prefix + ":".join(parts)

    async def run(self, feature: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        """`call(client)` within the deadline, or StoreUnavailable."""
        if time.monotonic() < self._quiet_until:
            self.health.failures[feature] += 1
            raise StoreUnavailable(f"the shared store is unavailable ({self.health.last_error})")
        try:
            async with asyncio.timeout(self.settings.timeout):
                result = await call(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(feature, exc)
            raise StoreUnavailable(f"the shared store is unavailable ({exc!r})") from None
        if not self.health.up:
            log.warning("shared store %s is back", redacted(self.settings.url or ""))
            self.health.up, self.health.since = True, time.time()
        return result

    def _failed(self, feature: str, exc: Exception) -> None:
        self.health.failures[feature] += 1
        self.health.last_error = repr(exc)
        self._quiet_until = time.monotonic() + self.settings.cooldown
        if self.health.up:
            log.error(
                "shared store %s failed (%s); features follow their failure policy: %r",
                redacted(self.settings.url or ""),
                feature,
                exc,
            )
            self.health.up, self.health.since = False, time.time()

    async def close(self) -> None:
        await self.client.aclose()


def unexpired(
    entries: dict[str, _E], key: str, deadline: Callable[[_E], float], now: float
) -> _E | None:
    """A memory backend's entry, or None when there is none or its deadline has passed (an
    expired entry is dropped on the way)."""
    entry = entries.get(key)
    if entry is None:
        return None
    if deadline(entry) <= now:
        del entries[key]
        return None
    return entry
