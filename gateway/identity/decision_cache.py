"""The decision cache: a policy engine's decisions remembered for a short while, bounded in
entries and in bytes, keyed by the input document without its volatile headers."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from gateway.identity.decision import Decision, PolicyEngine, PolicyError

# Per-request headers that would make every key unique without changing any sane decision:
# request ids and distributed-tracing context (W3C Trace Context, B3, vendors' variants).
VOLATILE_HEADERS = frozenset(
    {
        "x-request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "uber-trace-id",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "sentry-trace",
    }
)


def cache_key(input: Mapping[str, Any]) -> str:
    """A canonical serialisation of the input, volatile headers left out (not mutated)."""
    document: Mapping[str, Any] = input
    try:
        http = input["attributes"]["request"]["http"]
        headers = http["headers"]
    except (KeyError, TypeError):
        headers = {}
    if not VOLATILE_HEADERS.isdisjoint(headers):
        stable = {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}
        attributes = input["attributes"]
        request = {**attributes["request"], "http": {**http, "headers": stable}}
        document = {**input, "attributes": {**attributes, "request": request}}
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"the input is not a JSON document: {exc}") from exc


MAX_KEY_BYTES = 4096  # x cache_size (default 10,000): the decision cache stays under ~50 MB


class CachedPolicy:
    """Decisions remembered for `ttl` seconds, at most `max_entries` (least recently used
    out first), each for a key of at most `MAX_KEY_BYTES` (a larger request is decided, not
    remembered): the cache is bounded in bytes, not only in entries. Errors are never
    cached. A cached decision keeps its decision_id, the id of the evaluation it came from.
    Turn caching off by not wrapping the engine.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("the decision cache needs a positive ttl and max_entries")
        self.engine = engine
        self.ttl = ttl
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    def clear(self) -> None:
        """Forget every decision (e.g. when the policy changed)."""
        self._entries.clear()

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        key = cache_key(input)
        return await self.decide_keyed(key, lambda: input, len(key))

    async def decide_keyed(
        self, key: Hashable, make_input: Callable[[], Mapping[str, Any]], size: int = 0
    ) -> Decision:
        """Like decide(), for a caller that has a cheaper key than the serialised input (it
        must determine the input completely), of about `size` bytes; the input is built only
        on a miss."""
        if size > MAX_KEY_BYTES:
            self.misses += 1
            return await self.engine.decide(make_input())
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            del self._entries[key]
        self.misses += 1
        decision = await self.engine.decide(make_input())
        self._entries[key] = (self._clock() + self.ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return decision
