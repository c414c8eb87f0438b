"""Shadow traffic: after the primary has answered the client, ask the candidate the same
question and compare the two answers, off the request path.

The client's answer comes from the primary alone and is never delayed: the comparison runs
in a background task started once the primary's response is complete, with its own
connection pools and the shadow's own timeout. At most `concurrency` comparisons are in
flight; beyond that, copies are dropped and counted (Envoy's and nginx's mirrors queue
without bound or slow the primary; this drops). Results are batched into a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field

from gateway.config import Route, Upstream
from gateway.differ import Answer, Comparison, diff, noisy_paths
from gateway.errors import GatewayError
from gateway.histogram import Histogram
from gateway.pools import Pools
from gateway.shadow_config import ShadowSettings, ShadowStoreSettings
from gateway.shadow_store import Record, ShadowStore, Verdict, redact

log = logging.getLogger("strangler.shadow")

SHADOW_HEADER = (b"x-strangler-shadow", b"1")
NOISE_EVERY = 10  # with noise: auto, one mirrored request in this many asks the primary twice
_FLUSH_BATCH = 100
_RETAIN_EVERY = 100  # flushes between retention sweeps (and one at the first)
# A 5 KB JSON diff takes 0.15-0.7 ms; a 1 MiB one 30-90 ms, which must not stall the loop.
_INLINE_DIFF = 64 * 1024


class Tee:
    """Keeps a copy of what streams past, up to `cap` bytes."""

    __slots__ = ("cap", "data", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        if self.truncated:
            return
        if len(self.data) + len(chunk) > self.cap:
            self.truncated = True
            return
        self.data += chunk


@dataclass(frozen=True, slots=True)
class Exchange:
    """What the candidate is asked: the primary's request as it was forwarded."""

    route: Route
    settings: ShadowSettings
    primary: Upstream
    candidate: Upstream
    method: str
    path: str  # normalised, for the record
    target: bytes  # path and query as forwarded
    headers: list[tuple[bytes, bytes]]
    body: bytes | None


@dataclass
class RouteStats:
    mirrored: int = 0
    compared: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    latency: Histogram = field(default_factory=Histogram)  # the candidate's, in seconds


class Mirror:
    def __init__(
        self,
        store: ShadowStore,
        retention: ShadowStoreSettings,
        concurrency: int = 64,
        flush_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.retention = retention
        self._flushes = 0
        self.concurrency = concurrency
        self.flush_interval = flush_interval
        self.pools = Pools()  # never the primary's: a slow candidate cannot take its slots
        self._upstreams: dict[tuple[Upstream, float], Upstream] = {}
        self.in_flight = 0
        self.stats: dict[str, RouteStats] = {}
        self.noisy: dict[str, set[str]] = {}
        self._records: list[Record] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.TimerHandle | None = None

    @staticmethod
    def sampled(settings: ShadowSettings, method: str, request_id: str) -> bool:
        """Deterministic per request id, so a replayed request makes the same choice."""
        if method not in settings.methods:
            return False
        return zlib.crc32(request_id.encode()) < settings.sample * 2**32

    def launch(self, exchange: Exchange, primary: Answer, primary_ms: float) -> None:
        stats = self.stats.setdefault(exchange.route.name, RouteStats())
        stats.mirrored += 1
        if self.in_flight >= self.concurrency:
            stats.dropped += 1
            self._keep(self._record(exchange, primary, primary_ms, "dropped", None, None, None))
            return
        self.in_flight += 1
        noise = exchange.settings.noise and stats.mirrored % NOISE_EVERY == 1
        task = asyncio.get_running_loop().create_task(
            self._compare(exchange, primary, primary_ms, noise)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def dropped(self, route: Route, reason: str) -> None:
        """A request that was sampled but could not be mirrored (e.g. its body is too big)."""
        stats = self.stats.setdefault(route.name, RouteStats())
        stats.mirrored += 1
        stats.dropped += 1
        log.debug("shadow copy for route %s dropped: %s", route.name, reason)

    async def _compare(
        self, exchange: Exchange, primary: Answer, primary_ms: float, noise: bool
    ) -> None:
        try:
            started = time.perf_counter()
            try:
                candidate = await self._ask(exchange, exchange.candidate)
            except GatewayError as exc:
                record = self._record(
                    exchange, primary, primary_ms, "candidate_error", None, None, exc.detail
                )
                self._keep(record)
                return
            candidate_ms = (time.perf_counter() - started) * 1000
            if noise and exchange.method in ("GET", "HEAD"):
                await self._learn_noise(exchange, primary)
            rules = exchange.settings.compare
            learned = self.noisy.get(exchange.route.name)
            if learned:
                rules = dataclasses.replace(rules, noisy=frozenset(learned))
            if max(len(primary.body), len(candidate.body)) > _INLINE_DIFF:
                comparison = await asyncio.to_thread(diff, primary, candidate, rules)
            else:
                comparison = diff(primary, candidate, rules)
            record = self._record(
                exchange,
                primary,
                primary_ms,
                comparison.verdict,
                candidate,
                candidate_ms,
                None,
                comparison,
            )
            self._keep(record)
        except Exception:  # a comparison must never take the gateway down
            log.exception("shadow comparison failed for route %s", exchange.route.name)
        finally:
            self.in_flight -= 1

    async def _learn_noise(self, exchange: Exchange, first: Answer) -> None:
        with contextlib.suppress(GatewayError):
            second = await self._ask(exchange, exchange.primary)
            paths = noisy_paths(first, second, exchange.settings.compare)
            if paths:
                self.noisy.setdefault(exchange.route.name, set()).update(paths)

    async def _ask(self, exchange: Exchange, upstream: Upstream) -> Answer:
        """One exchange with `upstream`, on the mirror's pools with the shadow's timeout."""
        key = (upstream, exchange.settings.timeout)
        shadowed = self._upstreams.get(key)
        if shadowed is None:  # the upstream with the shadow's timeout: its own pool
            shadowed = self._upstreams[key] = dataclasses.replace(upstream, timeout=key[1])
        pool = self.pools.get(shadowed)
        payload = exchange.body

        async def body() -> AsyncIterator[bytes]:
            if payload:
                yield payload

        response = await pool.request(
            exchange.method,
            exchange.target,
            [*exchange.headers, SHADOW_HEADER],
            body() if payload else None,
            len(payload) if payload else None,
        )
        tee = Tee(exchange.settings.response_cap)
        try:
            while chunk := await response.read():
                tee.add(chunk)
        finally:
            response.release()
        return Answer(response.status, response.headers, bytes(tee.data), tee.truncated)

    def _record(
        self,
        exchange: Exchange,
        primary: Answer,
        primary_ms: float,
        verdict: Verdict,
        candidate: Answer | None,
        candidate_ms: float | None,
        error: str | None,
        comparison: Comparison | None = None,
    ) -> Record:
        stats = self.stats.setdefault(exchange.route.name, RouteStats())
        if verdict not in ("dropped", "candidate_error"):
            stats.compared += 1
        stats.verdicts[verdict] += 1
        if candidate_ms is not None:
            stats.latency.observe(candidate_ms / 1000)
        record = Record(
            at=time.time(),
            route=exchange.route.name,
            method=exchange.method,
            path=exchange.path,
            primary_status=primary.status,
            candidate_status=candidate.status if candidate else None,
            verdict=verdict,
            differences=comparison.differences if comparison else (),
            noisy=comparison.noisy if comparison else (),
            primary_ms=primary_ms,
            candidate_ms=candidate_ms,
            error=error,
        )
        return redact(record, exchange.settings.redact)

    def _keep(self, record: Record) -> None:
        self._records.append(record)
        if len(self._records) >= _FLUSH_BATCH:
            self._flush_soon(0)
        elif self._flusher is None:
            self._flush_soon(self.flush_interval)

    def _flush_soon(self, delay: float) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        loop = asyncio.get_running_loop()
        self._flusher = loop.call_later(delay, lambda: self._spawn(self.flush()))

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        self._flusher = None
        batch, self._records = self._records, []
        if not batch:
            return
        try:
            await self.store.record(batch)
            self._flushes += 1
            if self._flushes % _RETAIN_EVERY == 1:
                await self.store.retain(self.retention.retain, self.retention.max_age)
        except Exception:
            log.exception("could not store %d shadow comparisons", len(batch))

    async def drain(self) -> None:
        """Wait for comparisons in flight and store everything (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.flush()

    async def close(self) -> None:
        await self.drain()
        if self._flusher is not None:
            self._flusher.cancel()
        self.pools.close()
        await self.store.close()
