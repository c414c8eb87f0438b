"""Read-your-writes across the split: after a user writes through the monolith, their reads
on CDC-fed upstreams go to the monolith until the bridge has applied the write.

The request path calls `Consistency.route` only when routes.yaml has `read_your_writes:`
(gateway/config/consistency.py); then, after the split and the policy chose the upstream:

- A write is an unsafe method (not GET, HEAD, OPTIONS, TRACE) answered by the monolith with
  anything but a 4xx (a 4xx is the monolith refusing, nothing was written; a 5xx or the
  gateway's 502/504 may follow a write that happened). When its answer starts, the user is
  pinned (gateway/rollout/pins.py) for `window`. In position mode the pin holds the positions the
  monolith put in `X-Strangler-Commit-Position` (`public.products=42, ...`: per table the
  write changed, its commit position; legacy_monolith/commit_position.py); without a
  readable header, and always in window mode, it holds `ANY`. The header is internal: it
  is removed from the client's answer.
- A read (a safe method) whose upstream is CDC-fed, by a pinned user, goes to the monolith
  instead while the pin lasts and, in position mode, while the bridge's applied position
  (gateway/rollout/watermark.py) of any table of the pin that feeds the upstream is below the
  pin's: `tables: all` counts every table of the pin, a list only its own. A pin that
  holds `ANY`, or positions not read freshly, counts as not applied (fail safe).
- A tester's honoured `X-Strangler-Target` is left alone: they asked for that upstream.

The user is the token's `sub`, anonymous callers their sticky key (gateway/rollout/sticky.py: the
sticky cookie, else a MAC of their address). Pins live in the `store:` backend: in memory
for one gateway, in Redis for all replicas. When the store fails, a read is pinned (the
monolith has every write) and a write's pin is lost (counted): the safe side for reads.

Counters are in `stats` (plain data, read at scrape time) and each watermark's `stats`.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.base.errors import StoreUnavailable
from gateway.base.types import Message, Scope, Send
from gateway.config.consistency import ConsistencySettings, FedUpstream
from gateway.config.lifecycle import Kept
from gateway.config.routes import NO_ROUTE, Route, Upstream
from gateway.config.table import RouteTable
from gateway.identity.guard import Access
from gateway.limits.gate import Limits
from gateway.limits.store import RedisStore
from gateway.rollout import sticky
from gateway.rollout.assignment import OVERRIDE_HEADER
from gateway.rollout.pins import ANY, MemoryPins, PinStore, Positions, RedisPins
from gateway.rollout.watermark import Watermark

# The upstream's X-Strangler-Commit-Position, which gateway.request.headers takes out of the
# response, rides in the start message under this key (ASGI servers ignore keys they do not know).
COMMIT_POSITION_KEY = "strangler.commit_position"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_ENTRY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)=([0-9]{1,20})\s*$")
_MAX_ENTRIES = 64
_UNKNOWN: Positions = {ANY: 0}


@dataclass
class ConsistencyStats:
    pins: Counter[str] = field(default_factory=Counter)  # writes: position, window, unknown
    pinned: Counter[str] = field(default_factory=Counter)  # reads sent to the monolith, by route
    released: Counter[str] = field(default_factory=Counter)  # pinned users' reads let through
    stale: int = 0  # pinned reads decided without fresh positions
    bad_headers: int = 0  # unreadable X-Strangler-Commit-Position values
    store_failures: Counter[str] = field(default_factory=Counter)  # "read" / "write"

    def snapshot(self) -> dict[str, object]:
        return {
            "pins": dict(self.pins),
            "pinned": dict(self.pinned),
            "released": dict(self.released),
            "stale": self.stale,
            "bad_headers": self.bad_headers,
            "store_failures": dict(self.store_failures),
        }


def parse_positions(value: bytes) -> Positions | None:
    """`public.products=42, public.categories=7` -> {table: position}; None if malformed."""
    entries = value.decode("latin-1").split(",")
    if len(entries) > _MAX_ENTRIES:
        return None
    parsed: Positions = {}
    for entry in entries:
        match = _ENTRY.match(entry)
        if match is None or int(match[2]) >= 2**64:
            return None
        table, position = match[1], int(match[2])
        parsed[table] = max(position, parsed.get(table, position))
    return parsed


class Consistency:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits  # its shared store, when that is Redis, holds the pins
        self.clock = clock
        self.stats = ConsistencyStats()
        self.memory = MemoryPins(clock)
        self._redis: tuple[RedisStore, RedisPins] | None = None
        self.settings: ConsistencySettings | None = None
        self._watermarks: Kept[tuple[str, str], Watermark] = Kept(Watermark.close)

    async def route(
        self,
        table: RouteTable,
        route: Route | None,
        upstream: Upstream,
        scope: Scope,
        access: Access,
        send: Send,
    ) -> tuple[Upstream, Send, bool]:
        """(the upstream, the send to use, whether a pin moved the read to the monolith)."""
        settings = table.read_your_writes
        assert settings is not None
        if settings is not self.settings:
            self._retarget(settings)
        if scope["method"] in SAFE_METHODS:
            fed = settings.upstreams.get(upstream.name)
            if fed is None or _overridden(scope, access):
                return upstream, send, False
            pins = self._pins()
            if pins is self.memory and not len(self.memory):
                return upstream, send, False  # nobody is pinned: no key to compute
            name = route.name if route is not None else NO_ROUTE
            if not await self._pinned(settings, fed, pins, _subject(table, scope, access), name):
                return upstream, send, False
            self.stats.pinned[name] += 1
            return table.upstreams[settings.monolith], send, True
        if upstream.name != settings.monolith:
            return upstream, send, False
        return upstream, self._recording(settings, _subject(table, scope, access), send), False

    # -- reads ------------------------------------------------------------------------------

    async def _pinned(
        self,
        settings: ConsistencySettings,
        fed: FedUpstream,
        pins: PinStore,
        subject: str,
        route: str,
    ) -> bool:
        try:
            pin = await pins.get(subject)
        except StoreUnavailable:
            self.stats.store_failures["read"] += 1
            return True  # the monolith has every write; the new service may not
        if not pin:
            return False
        if settings.mode == "window" or ANY in pin:
            return True
        waiting = {t: p for t, p in pin.items() if fed.concerns(t)}
        if not waiting:
            return False  # the user wrote only tables this upstream is not fed from
        assert fed.source is not None  # position mode: routes.yaml names the positions
        watermark = self.watermarks[fed.source]
        watermark.want(settings.window)
        applied = watermark.applied()
        if applied is None:
            self.stats.stale += 1
            return True
        for source_table, position in waiting.items():
            done = applied.get(source_table)
            if done is None or not done.covers(position):
                return True
        self.stats.released[route] += 1
        return False

    # -- writes -----------------------------------------------------------------------------

    def _recording(self, settings: ConsistencySettings, subject: str, send: Send) -> Send:
        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = message.get(COMMIT_POSITION_KEY)
                if not 400 <= message["status"] < 500:
                    await self._pin(settings, subject, value)
            await send(message)

        return send_recorded

    async def _pin(self, settings: ConsistencySettings, subject: str, value: bytes | None) -> None:
        positions = _UNKNOWN
        if settings.mode == "window":
            self.stats.pins["window"] += 1
        else:
            parsed = parse_positions(value) if value is not None else None
            if value is not None and parsed is None:
                self.stats.bad_headers += 1
            if parsed is None:
                self.stats.pins["unknown"] += 1
            else:
                positions = parsed
                self.stats.pins["position"] += 1
                for watermark in self.watermarks.values():
                    watermark.want(settings.window)  # fresh by the time the user reads
        try:
            await self._pins().add(subject, positions, settings.window)
        except StoreUnavailable:
            # Counted; the store logs going down and coming back, not every request.
            self.stats.store_failures["write"] += 1

    # -- the pins' store and the watermarks, per routes table -------------------------------

    def _pins(self) -> PinStore:
        store = self.limits.redis
        if store is None:
            return self.memory
        if self._redis is None or self._redis[0] is not store:
            self._redis = (store, RedisPins(store))
        return self._redis[1]

    @property
    def watermarks(self) -> dict[tuple[str, str], Watermark]:
        """The CDC positions read per source (url, table prefix) of the live settings."""
        return self._watermarks.live

    def _retarget(self, settings: ConsistencySettings) -> None:
        """A new routes table: keep the watermarks it still names, close the others."""
        self.settings = settings
        wanted = {fed.source for fed in settings.upstreams.values() if fed.source is not None}
        self._watermarks.retain(
            lambda source, watermark: source in wanted and watermark.poll == settings.poll
        )
        for url, prefix in wanted - self.watermarks.keys():
            self._watermarks.get(
                (url, prefix), lambda source: Watermark(*source, settings.poll, self.clock)
            )

    async def close(self) -> None:
        await self._watermarks.close()


def _subject(table: RouteTable, scope: Scope, access: Access) -> str:
    if access.identity is not None:
        return "sub:" + access.identity.sub
    client = scope.get("client")
    key, _ = sticky.key(
        table.rollout.sticky,
        None,
        scope["headers"],
        client[0] if client else None,
        scope.get("scheme", "http"),
        table.is_trusted,
    )
    return key.decode("latin-1")


def _overridden(scope: Scope, access: Access) -> bool:
    """Whether a tester chose the upstream (the assigner honoured their header)."""
    if access.decision is None or not access.decision.override:
        return False
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    return any(name == OVERRIDE_HEADER for name, _ in headers)
