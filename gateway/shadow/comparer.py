"""The comparisons themselves: ask the candidate, learn noise, diff, record in batches.

`Comparer` is the `inline` adapter of the `Mirror` port (it then runs in the gateway's event
loop) and the heart of the shadow worker process. Each comparison is a task with the
mirror's own connection pools and the shadow's timeout; at most `concurrency` are in flight
and further copies are dropped and counted. Records and drop tallies (per route and reason)
go to the store in batches. In the gateway's loop (`inline`), `admit` also asks the gateway's
copy budget (`gateway.shadow.budget`); in the worker, copies come admitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine

from gateway.base.errors import GatewayError
from gateway.config.routes import Route, Upstream
from gateway.config.shadow import ShadowStoreSettings
from gateway.request.body import Tee
from gateway.request.pools import Pools
from gateway.shadow.budget import Budget
from gateway.shadow.differ import Answer, Comparison, diff, noisy_paths
from gateway.shadow.mirror import (
    GATEWAY_BUSY,
    SHADOW_BEHIND,
    SHADOW_HEADER,
    Copy,
    RouteStats,
    route_stats,
)
from gateway.shadow.records import Record, Recorded
from gateway.shadow.redaction import redact
from gateway.shadow.store import ShadowStore

log = logging.getLogger("strangler.shadow")

NOISE_EVERY = 10  # with noise: auto, one mirrored request in this many asks the primary twice
_FLUSH_BATCH = 100
_RETAIN_EVERY = 100  # flushes between retention sweeps (and one at the first)
# A 5 KB JSON diff takes 0.15-0.7 ms; a 1 MiB one 30-90 ms, which must not stall the loop.
_INLINE_DIFF = 64 * 1024


class Comparer:
    def __init__(
        self,
        store: ShadowStore,
        retention: ShadowStoreSettings,
        concurrency: int = 64,
        flush_interval: float = 1.0,
        budget: Budget | None = None,
    ) -> None:
        self.store = store
        self.budget = budget  # the gateway's, inline; None in the worker
        self.retention = retention
        self.concurrency = concurrency
        self.flush_interval = flush_interval
        self.pools = Pools()  # never the primary's: a slow candidate cannot take its slots
        self._upstreams: dict[tuple[Upstream, float], Upstream] = {}
        self.in_flight = 0
        self.finished = 0  # copies launched and done with: dropped, or compared or failed
        self.on_finish: Callable[[], None] | None = None  # called as `finished` grows
        self.stats: dict[str, RouteStats] = {}
        self.noisy: dict[str, set[str]] = {}
        self._seen: Counter[str] = Counter()  # copies per route, for the noise sample
        self._records: list[Record] = []
        self._drops: Counter[tuple[str, str]] = Counter()  # (route, reason) not yet stored
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushes = 0
        self._flusher: asyncio.TimerHandle | None = None

    def admit(self, route: Route) -> bool:
        if self.in_flight >= self.concurrency:
            self.dropped(route, SHADOW_BEHIND)
            return False
        if self.budget is not None and not self.budget.admit():
            self.dropped(route, GATEWAY_BUSY)
            return False
        return True

    def launch(self, copy: Copy) -> None:
        name = copy.route.name
        route_stats(self.stats, name).mirrored += 1
        if self.in_flight >= self.concurrency:
            route_stats(self.stats, name).drops[SHADOW_BEHIND] += 1
            self.tally(name, SHADOW_BEHIND, 1)
            self._finish()
            return
        self.in_flight += 1
        self._seen[name] += 1
        noise = copy.route.shadow is not None and copy.route.shadow.noise
        noise = noise and self._seen[name] % NOISE_EVERY == 1
        self._spawn(self._compare(copy, noise))

    def dropped(self, route: Route, reason: str) -> None:
        stats = route_stats(self.stats, route.name)
        stats.mirrored += 1
        stats.drops[reason] += 1
        self.tally(route.name, reason, 1)

    def tally(self, route: str, reason: str, count: int) -> None:
        """Store that `count` copies of `route` were dropped for `reason` (counted by the
        caller)."""
        self._drops[route, reason] += count
        self._flush_later()

    async def _compare(self, copy: Copy, noise: bool) -> None:
        settings = copy.route.shadow
        assert settings is not None  # only shadowed routes are mirrored
        primary = Answer(
            copy.status,
            [(name.lower(), value) for name, value in copy.response_headers],
            copy.response_body,
            copy.truncated,
        )
        try:
            started = time.perf_counter()
            try:
                candidate = await self._ask(copy, copy.candidate)
            except GatewayError as exc:
                route_stats(self.stats, copy.route.name).candidate_errors += 1
                self._keep(self._record(copy, "candidate_error", None, None, exc.detail))
                return
            candidate_ms = (time.perf_counter() - started) * 1000
            if noise and copy.method in ("GET", "HEAD"):
                await self._learn_noise(copy, primary)
            rules = settings.compare
            learned = self.noisy.get(copy.route.name)
            if learned:
                rules = dataclasses.replace(rules, noisy=frozenset(learned))
            if max(len(primary.body), len(candidate.body)) > _INLINE_DIFF:
                comparison = await asyncio.to_thread(diff, primary, candidate, rules)
            else:
                comparison = diff(primary, candidate, rules)
            stats = route_stats(self.stats, copy.route.name)
            setattr(stats, comparison.verdict, getattr(stats, comparison.verdict) + 1)
            stats.latency.observe(candidate_ms / 1000)
            record = self._record(
                copy, comparison.verdict, candidate.status, candidate_ms, None, comparison
            )
            self._keep(record)
        except Exception:  # a comparison must never take its process down
            log.exception("shadow comparison failed for route %s", copy.route.name)
        finally:
            self.in_flight -= 1
            self._finish()

    def _finish(self) -> None:
        self.finished += 1
        if self.on_finish is not None:
            self.on_finish()

    async def _learn_noise(self, copy: Copy, first: Answer) -> None:
        assert copy.route.shadow is not None
        with contextlib.suppress(GatewayError):
            second = await self._ask(copy, copy.primary)
            paths = noisy_paths(first, second, copy.route.shadow.compare)
            if paths:
                self.noisy.setdefault(copy.route.name, set()).update(paths)

    async def _ask(self, copy: Copy, upstream: Upstream) -> Answer:
        """One exchange with `upstream`, on the mirror's pools with the shadow's timeout."""
        assert copy.route.shadow is not None
        settings = copy.route.shadow
        key = (upstream, settings.timeout)
        shadowed = self._upstreams.get(key)
        if shadowed is None:  # the upstream with the shadow's timeout: its own pool
            shadowed = self._upstreams[key] = dataclasses.replace(upstream, timeout=key[1])
        pool = self.pools.get(shadowed)
        payload = copy.body

        async def body() -> AsyncIterator[bytes]:
            if payload:
                yield payload

        response = await pool.request(
            copy.method,
            copy.target,
            [*copy.headers, SHADOW_HEADER],
            body() if payload else None,
            len(payload) if payload else None,
        )
        tee = Tee(settings.response_cap)
        try:
            while chunk := await response.read():
                tee.add(chunk)
        finally:
            response.release()
        return Answer(response.status, response.headers, tee.data, tee.truncated)

    def _record(
        self,
        copy: Copy,
        verdict: Recorded,
        candidate_status: int | None,
        candidate_ms: float | None,
        error: str | None,
        comparison: Comparison | None = None,
    ) -> Record:
        assert copy.route.shadow is not None
        record = Record(
            at=time.time(),
            route=copy.route.name,
            method=copy.method,
            path=copy.path,
            primary_status=copy.status,
            candidate_status=candidate_status,
            verdict=verdict,
            differences=comparison.differences if comparison else (),
            noisy=comparison.noisy if comparison else (),
            primary_ms=copy.primary_ms,
            candidate_ms=candidate_ms,
            error=error,
        )
        return redact(record, copy.route.shadow.redact)

    def _keep(self, record: Record) -> None:
        self._records.append(record)
        if len(self._records) >= _FLUSH_BATCH:
            self._flush_soon(0)
        else:
            self._flush_later()

    def _flush_later(self) -> None:
        if self._flusher is None:
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
        if self._flusher is not None:
            self._flusher.cancel()
        self._flusher = None
        batch, self._records = self._records, []
        drops, self._drops = self._drops, Counter()
        if not batch and not drops:
            return
        try:
            await self.store.record(batch, drops)
            self._flushes += 1
            if self._flushes % _RETAIN_EVERY == 1:
                await self.store.retain(self.retention.retain, self.retention.max_age)
        except Exception:
            log.exception("could not store %d shadow comparisons", len(batch))

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.flush()

    async def close(self) -> None:
        if self.budget is not None:
            self.budget.close()
        await self.drain()
        self.pools.close()
        await self.store.close()
