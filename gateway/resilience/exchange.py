"""One upstream exchange under the resilience rules of routes.yaml.

    admit: the gateway's and the upstream's in-flight caps for the route's priority
        (over a cap: 503 overloaded at once) -> the upstream's circuit breaker (open: 503
        circuit_open at once) -> attempt -> a retryable failure, with attempts, budget and
        deadline left: back off (full jitter) and attempt again -> the response

What is retried: only the route's retry methods (GET, HEAD, OPTIONS; PUT and DELETE when
the route lists them), only after a failed connect, a connection closed or reset before the
response head, or a 502/503 answer, and never once any of the request body has been read
from the client (it cannot be replayed). A timeout waiting for the head is not retried: the
upstream may still be working on the request. The pool's own retry of a stale pooled
connection (gateway.request.client) happens inside one attempt and is not counted here.

What the breaker counts as a failed call: a connect failure or timeout, a dropped
connection, an invalid or late response head, and 502, 503 and 504 answers; every attempt
is a call. A failure after the head (mid-body) is not judged.

Everything here is per upstream (keyed by its whole config, like the pools: a reload that
changes an upstream starts it afresh) and plain counters, read at scrape time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.base.errors import (
    CircuitOpen,
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    Overloaded,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.config.lifecycle import Kept
from gateway.config.resilience import RouteResilience, Timeouts, timeouts
from gateway.config.routes import Route, Upstream
from gateway.config.table import RouteTable
from gateway.request.client import Pool, Response
from gateway.request.context import RequestContext
from gateway.resilience.breaker import OPEN, CircuitBreaker
from gateway.resilience.bulkhead import Bulkhead
from gateway.resilience.retry_budget import RetryBudget, backoff

RETRIED_STATUSES = frozenset({502, 503})
FAILED_STATUSES = frozenset({502, 503, 504})
_RETRIED_ERRORS = (ConnectFailed, ConnectTimeout, ConnectionDropped)
_SHED_RETRY_AFTER = 1.0
TICK = 0.1  # seconds between moves of the windows: their smallest bucket (a 1 s window's)


@dataclass
class UpstreamStats:
    requests: int = 0  # admitted requests (not attempts)
    attempts: int = 0
    failures: int = 0  # failed attempts, as the breaker counts them
    timeouts: int = 0  # attempts that ended in a timeout (504)


class UpstreamState:
    """The breaker, retry budget, bulkhead and counters of one upstream."""

    def __init__(self, upstream: Upstream, gateway: Bulkhead, clock: Callable[[], float]) -> None:
        self.upstream = upstream
        settings = upstream.resilience
        self.breaker = None
        if settings.breaker.enabled:
            self.breaker = CircuitBreaker(settings.breaker, clock)
        self.budget = RetryBudget(settings.retries)
        self.max_in_flight = settings.max_in_flight or upstream.pool
        self.stats = UpstreamStats()
        self.advance(clock())
        self.bulkhead = Bulkhead()
        self._gateway = gateway

    def advance(self, now: float) -> None:
        """Move the breaker's and the budget's windows along (Resilience's timer)."""
        if self.breaker is not None:
            self.breaker.advance(now)
        self.budget.advance(now, self.stats.requests)

    def leave(self) -> None:
        """One request of this upstream is over (inlined Bulkhead.leave: every request)."""
        self.bulkhead.in_flight -= 1
        self._gateway.in_flight -= 1


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What one route (or the default upstream) needs per request, resolved at load time."""

    state: UpstreamState
    priority: str
    timeouts: Timeouts
    attempts: int
    retry_methods: frozenset[str]
    gateway_cap: int
    upstream_cap: int


class AttemptPlan:
    """The route plans of one route table, built on its first request."""

    def __init__(self, table: RouteTable, state: Callable[[Upstream], UpstreamState]) -> None:
        self._table = table
        self._state = state
        upstreams = table.upstreams
        self.routes = {r.name: self._plan(upstreams[r.upstream], r) for r in table.routes}
        self.defaults = {u.name: self._plan(u, None) for u in table.upstreams.values()}
        # A route's requests that go elsewhere than its main upstream (a canary's other
        # targets, a tester's override, a pin to the monolith), by (route, upstream).
        self._others: dict[tuple[str, str], RoutePlan] = {}

    def _plan(self, upstream: Upstream, route: Route | None) -> RoutePlan:
        settings = route.resilience if route is not None else RouteResilience()
        shared = self._state(upstream)
        shedding = self._table.shedding
        return RoutePlan(
            state=shared,
            priority=settings.priority,
            timeouts=timeouts(upstream, settings),
            attempts=settings.attempts or upstream.resilience.retries.attempts,
            retry_methods=settings.retry_methods,
            gateway_cap=shedding.cap(shedding.max_in_flight, settings.priority),
            upstream_cap=shedding.cap(shared.max_in_flight, settings.priority),
        )

    def choose(self, route: Route | None, upstream: Upstream) -> RoutePlan:
        """The plan of a request of `route` sent to `upstream`: the route's settings with
        that upstream's breaker, limits and timeouts."""
        if route is None:
            return self.defaults[upstream.name]
        chosen = self.routes[route.name]
        if chosen.state.upstream.name == upstream.name:
            return chosen
        other = self._others.get((route.name, upstream.name))
        if other is None:
            other = self._others[(route.name, upstream.name)] = self._plan(upstream, route)
        return other


class _Replayable:
    """The request body, noting whether any of it was read: then it cannot be sent again."""

    __slots__ = ("_chunks", "started")

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.started = False

    def __aiter__(self) -> _Replayable:
        return self

    async def __anext__(self) -> bytes:
        self.started = True
        return await anext(self._chunks)


class Resilience:
    """Kept for the gateway's life: per-upstream state survives reloads that keep the
    upstream, and the gateway-wide bulkhead all of them.

    The breakers' and budgets' windows count without reading a clock on the success path;
    a timer started by the first request moves them along every `TICK` seconds.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.clock = clock
        self.uniform = uniform  # backoff jitter draws
        self.gateway = Bulkhead()
        self._states: Kept[Upstream, UpstreamState] = Kept()
        self._planned: tuple[RouteTable, AttemptPlan] | None = None
        self._ticker: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self.clock()  # late-bound: a test may swap `clock`

    @property
    def states(self) -> dict[Upstream, UpstreamState]:
        return self._states.live

    def state(self, upstream: Upstream) -> UpstreamState:
        return self._states.get(upstream, self._new_state)

    def _new_state(self, upstream: Upstream) -> UpstreamState:
        return UpstreamState(upstream, self.gateway, self.now)

    def tick(self) -> None:
        """Move every window to now, and again in `TICK` seconds."""
        now = self.clock()
        for state in self.states.values():
            state.advance(now)
        self._ticker = asyncio.get_running_loop().call_later(TICK, self.tick)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def plan(self, table: RouteTable) -> AttemptPlan:
        if self._planned is None or self._planned[0] is not table:
            self._planned = (table, AttemptPlan(table, self.state))
        return self._planned[1]

    def retain_only(self, table: RouteTable) -> None:
        """Forget upstreams that `table` no longer has (called on reload)."""
        keep = set(table.upstreams.values())
        self._states.retain(lambda upstream, _: upstream in keep)

    async def exchange(
        self,
        pool: Pool,
        ctx: RequestContext,
        body: AsyncIterator[bytes] | None,
        length: int | None,
    ) -> Response:
        """`ctx.upstream`'s response head, within the rules; its release() frees the slots.
        One coroutine for admission and attempts: this runs on every proxied request."""
        if self._ticker is None:
            self.tick()
        upstream, method, target, headers = ctx.upstream, ctx.method, ctx.target, ctx.headers
        assert upstream is not None
        chosen = self.plan(ctx.table).choose(ctx.route, upstream)
        state = chosen.state
        self._admit(chosen, upstream)
        try:
            ticket = self._ticket(state)
            state.stats.requests += 1  # the retry budget's count too (folded in by advance)
            attempts = chosen.attempts if method in chosen.retry_methods else 1
            source = _Replayable(body) if body is not None and attempts > 1 else body
            deadline = asyncio.get_running_loop().time() + chosen.timeouts.deadline
            attempt = 1
            while True:
                state.stats.attempts += 1
                try:
                    response = await pool.request(
                        method, target, headers, source, length, chosen.timeouts, deadline
                    )
                except (UpstreamUnavailable, UpstreamTimeout) as exc:
                    self._failed(state, ticket, isinstance(exc, UpstreamTimeout))
                    if not isinstance(exc, _RETRIED_ERRORS):
                        raise
                    delay = self._retry_delay(chosen, attempt, attempts, source, deadline)
                    if delay is None:
                        raise
                except BaseException:
                    if state.breaker is not None:
                        state.breaker.cancel(ticket)  # not the upstream's doing: not judged
                    raise
                else:
                    status = response.status
                    failed = status in FAILED_STATUSES
                    if failed:
                        self._failed(state, ticket, status == 504)
                    delay = None
                    if status in RETRIED_STATUSES:
                        delay = self._retry_delay(chosen, attempt, attempts, source, deadline)
                    if delay is None:  # a success, or the upstream's 502/503 for the client
                        response.on_release = partial(
                            self._settle, state, None if failed else ticket
                        )
                        return response
                    response.release()
                attempt += 1
                await asyncio.sleep(delay)
                ticket = self._ticket(state)
        except BaseException:
            state.leave()
            raise

    def _admit(self, chosen: RoutePlan, upstream: Upstream) -> None:
        """Take an in-flight slot of the gateway and of the upstream, or shed the request."""
        if not self.gateway.enter(chosen.gateway_cap, chosen.priority):
            raise Overloaded(
                f"the gateway is at its in-flight limit for {chosen.priority} requests",
                _SHED_RETRY_AFTER,
            )
        if not chosen.state.bulkhead.enter(chosen.upstream_cap, chosen.priority):
            self.gateway.leave()
            raise Overloaded(
                f"upstream {upstream.name!r} is at its in-flight limit for {chosen.priority}"
                " requests",
                _SHED_RETRY_AFTER,
            )

    def _ticket(self, state: UpstreamState) -> int:
        breaker = state.breaker
        if breaker is None:
            return 0
        ticket = breaker.allow()
        if ticket is None:
            raise CircuitOpen(
                f"the circuit breaker of upstream {state.upstream.name!r} is open",
                breaker.retry_after(),
            )
        return ticket

    def _settle(self, state: UpstreamState, ticket: int | None, error: Exception | None) -> None:
        """A response is over (released): its body's outcome, unless its head was judged
        (a failed one). A good head is judged with its body: a reset or a timeout while the
        body is relayed is the upstream's failure too."""
        if ticket is not None:
            if error is not None:
                self._failed(state, ticket, isinstance(error, UpstreamTimeout))
            elif state.breaker is not None:
                state.breaker.record(ticket, True)
        state.leave()

    def _failed(self, state: UpstreamState, ticket: int, timed_out: bool) -> None:
        state.stats.failures += 1
        state.stats.timeouts += timed_out
        if state.breaker is not None:
            state.breaker.record(ticket, False)

    def _retry_delay(
        self,
        plan: RoutePlan,
        attempt: int,
        attempts: int,
        source: AsyncIterator[bytes] | None,
        deadline: float,
    ) -> float | None:
        """The wait before the next attempt, or None when it must not be made."""
        if attempt >= attempts or (isinstance(source, _Replayable) and source.started):
            return None
        settings = plan.state.upstream.resilience.retries
        delay = backoff(settings, attempt, self.uniform())
        if asyncio.get_running_loop().time() + delay >= deadline:
            return None
        if not plan.state.budget.withdraw(self.clock(), plan.state.stats.requests):
            return None
        return delay

    def describe(self, table: RouteTable) -> dict[str, Any]:
        """`GET /_strangler/upstreams`: limits, breakers and counters of the live table."""
        upstreams: dict[str, Any] = {}
        for upstream in table.upstreams.values():
            state = self.state(upstream)
            breaker = state.breaker
            upstreams[upstream.name] = {
                "url": upstream.url,
                "in_flight": state.bulkhead.in_flight,
                "max_in_flight": state.max_in_flight,
                "shed": state.bulkhead.shed,
                **vars(state.stats),
                "retries": vars(state.budget.stats),
                "breaker": None
                if breaker is None
                else {
                    "state": breaker.current().value,
                    "failure_rate": round(breaker.failure_rate(), 4),
                    "calls_in_window": breaker.window.total,
                    "retry_after": round(breaker.retry_after(), 3)
                    if breaker.state is OPEN
                    else None,
                    **vars(breaker.stats),
                },
            }
        return {
            "gateway": {
                "in_flight": self.gateway.in_flight,
                "max_in_flight": table.shedding.max_in_flight,
                "shed": self.gateway.shed,
            },
            "upstreams": upstreams,
        }
