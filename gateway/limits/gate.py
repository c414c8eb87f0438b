"""Rate limits, idempotency keys and revoked tokens, on the routes file's shared store.

The request path calls `Limits.admit` only for a route with a `rate_limit:` or
`idempotency:` block; other routes never get here and pay nothing. The guard asks
`Limits.is_revoked` for every token with a `jti`. The adapters come from `store:`
(memory or Redis) and are swapped when a reload names another store.

When the store fails, each feature follows its policy (`store: failure:`, or the route's
own `failure:`): open lets the request through without the feature, closed answers 503
`store_unavailable` with Retry-After. Either way the outcome is counted in `stats`, plain
counters that a metrics endpoint reads at scrape time.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.base.errors import (
    BadRequest,
    IdempotencyConflict,
    IdempotencyMismatch,
    ResponseNotKept,
    StoreUnavailable,
    TooManyRequests,
)
from gateway.base.types import Message, Receive, Scope, Send
from gateway.config.lifecycle import Closing, Kept
from gateway.config.limits import IdempotencySettings, RateLimitSettings, StoreSettings
from gateway.config.table import RouteTable
from gateway.identity.tokens import Identity, InMemoryRevocations, RevocationStore
from gateway.limits import ratelimit
from gateway.limits.idempotency import (
    Held,
    IdempotencyStore,
    MemoryIdempotency,
    RedisIdempotency,
    ResponseCapture,
    StoredResponse,
    fingerprint,
    replayed_body,
    request_key,
    scoped,
)
from gateway.limits.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, Usage
from gateway.limits.revocations import RedisRevocations
from gateway.limits.store import RedisStore, StoreHealth
from gateway.request.body import request_body
from gateway.request.context import RequestContext

Endpoint = tuple[str, str | None, float, float, str]  # StoreSettings.endpoint: one store


@dataclass(slots=True)
class Admitted:
    """What the limits let the request do: be forwarded with `receive` and `send` (a capture
    that keeps the answer for its idempotency key), then `finish()`; or, when `stored` is
    set, be answered with that instead (`replay`): the key's first request's answer."""

    receive: Receive
    send: Send
    stored: StoredResponse | None = None
    claim: tuple[_Idempotent, ResponseCapture] | None = None

    async def finish(self) -> None:
        """After the forward, whatever its outcome: a key whose answer was not kept is freed."""
        if self.claim is not None:
            idempotent, capture = self.claim
            await idempotent.finish(capture)


@dataclass
class LimitStats:
    """Outcomes per (feature, route, outcome), and the store's health."""

    health: StoreHealth
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def add(self, feature: str, route: str, outcome: str) -> None:
        self.counts[(feature, route, outcome)] += 1

    def snapshot(self) -> dict[str, object]:
        features: dict[str, dict[str, dict[str, int]]] = {}
        for (feature, route, outcome), n in sorted(self.counts.items()):
            features.setdefault(feature, {}).setdefault(route, {})[outcome] = n
        return {"store": self.health.snapshot(), **features}


@dataclass
class _Backend:
    settings: StoreSettings
    rate_limiter: RateLimiter
    keys: IdempotencyStore
    revocations: RevocationStore
    redis: RedisStore | None = None

    def close(self) -> Closing:
        return self.redis.close() if self.redis is not None else None


def _open(settings: StoreSettings, health: StoreHealth, clock: Callable[[], float]) -> _Backend:
    if settings.backend == "redis":
        store = RedisStore(settings, health)
        return _Backend(
            settings,
            RedisRateLimiter(store),
            RedisIdempotency(store),
            RedisRevocations(store),
            store,
        )
    return _Backend(
        settings, MemoryRateLimiter(clock), MemoryIdempotency(clock), InMemoryRevocations()
    )


class Limits:
    def __init__(
        self, settings: StoreSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.stats = LimitStats(StoreHealth(settings.backend))
        self._backends: Kept[Endpoint, _Backend] = Kept(_Backend.close)  # the live one
        self._backend = self._use(settings)

    # -- lifecycle --------------------------------------------------------------------------

    def _use(self, settings: StoreSettings) -> _Backend:
        health = self.stats.health
        return self._backends.get(settings.endpoint, lambda _: _open(settings, health, self.clock))

    def retain_only(self, table: RouteTable) -> None:
        """On reload: keep the store (and its counters) unless the table names another."""
        settings = table.store
        self._backends.retain(lambda endpoint, _: endpoint == settings.endpoint)
        if settings.endpoint not in self._backends.live:
            self.stats.health = StoreHealth(settings.backend)
        self._backend = self._use(settings)
        self._backend.settings = settings  # the failure policies may have changed

    async def close(self) -> None:
        await self._backends.close()

    @property
    def keys(self) -> IdempotencyStore:
        return self._backend.keys

    @property
    def redis(self) -> RedisStore | None:
        """The shared store's Redis connection, when it is Redis (read-your-writes' pins)."""
        return self._backend.redis

    # -- the revocation port, as the guard sees it ------------------------------------------

    async def is_revoked(self, jti: str) -> bool:
        try:
            return await self._backend.revocations.is_revoked(jti)
        except StoreUnavailable as exc:
            self.on_store_failure(
                "revocation", "-", None, exc, "cannot check whether the token is revoked"
            )
            return False

    async def revoke(self, jti: str, until: float) -> None:
        await self._backend.revocations.revoke(jti, until)

    # -- the request path -------------------------------------------------------------------

    async def admit(self, ctx: RequestContext, receive: Receive, send: Send) -> Admitted:
        """The route's rate limit, then its idempotency keys: what the pipeline does next
        (`Admitted`), or the error that answers the request."""
        route, table, scope = ctx.route, ctx.table, ctx.scope
        assert route is not None and route.limits is not None
        rule = route.limits.rate_limit
        if rule is not None:
            usage = await self._rate_limit(route.name, rule, scope, table, ctx.identity)
            if usage is not None:
                send = _adding(send, ratelimit.headers(route.name, usage))
        keys = route.limits.idempotency
        if keys is not None and scope["method"] in keys.methods:
            key = request_key(scope["headers"])
            if key is not None:
                identity = ctx.identity
                subject = identity.sub if identity else "ip:" + client_address(scope, table)
                idempotent = _Idempotent(self, route.name, keys, scoped(route.name, subject, key))
                return await idempotent.admit(ctx, receive, send)
            if keys.required:
                raise BadRequest(f"{scope['method']} on this route needs an Idempotency-Key header")
        return Admitted(receive, send)

    async def _rate_limit(
        self,
        route: str,
        rule: RateLimitSettings,
        scope: Scope,
        table: RouteTable,
        identity: Identity | None,
    ) -> Usage | None:
        if rule.key == "user" and identity is not None:
            client = "user:" + identity.sub
        else:
            client = _api_key(scope, rule.header) or "ip:" + client_address(scope, table)
        try:
            usage = await self._backend.rate_limiter.hit(
                ratelimit.bucket_name(route, rule, client), rule
            )
        except StoreUnavailable as exc:
            self.on_store_failure(
                "rate_limit", route, rule.failure, exc, "cannot check the rate limit"
            )
            return None
        if not usage.allowed:
            self.stats.add("rate_limit", route, "limited")
            raise TooManyRequests(
                f"more than {rule.limit} requests in {rule.window}s",
                ratelimit.headers(route, usage),
            )
        self.stats.add("rate_limit", route, "allowed")
        return usage

    def on_store_failure(
        self, feature: str, route: str, mode: str | None, exc: StoreUnavailable, what: str
    ) -> None:
        """Apply the feature's failure policy: return (open) or raise 503 (closed)."""
        mode = mode or getattr(self._backend.settings.failure, feature)
        self.stats.add(feature, route, f"failed_{mode}")
        if mode == "closed":
            retry = str(max(1, math.ceil(self._backend.settings.cooldown))).encode()
            raise StoreUnavailable(f"{what}: {exc.detail}", [(b"retry-after", retry)]) from None


class _Idempotent:
    """One request with an Idempotency-Key on a route that honours them."""

    def __init__(self, limits: Limits, route: str, rules: IdempotencySettings, key: str) -> None:
        self.limits = limits
        self.store = limits.keys
        self.route = route
        self.rules = rules
        self.key = key
        self.token = f"{random.getrandbits(128):032x}"  # whose claim it is, not a secret

    def _count(self, outcome: str) -> None:
        self.limits.stats.add("idempotency", self.route, outcome)

    async def admit(self, ctx: RequestContext, receive: Receive, send: Send) -> Admitted:
        """Claim the key (the answer is then captured, and kept by its last message) or find
        what it holds. Raises ClientGone before anything is claimed: a retry starts afresh."""
        route, scope = ctx.route, ctx.scope
        assert route is not None and ctx.path is not None
        body = await _read_body(scope["headers"], receive, ctx.body_limit)
        query = scope.get("query_string", b"")
        target = ctx.path.encode() + (b"?" + query if query else b"")
        fp = fingerprint(scope["method"], target, body)
        receive = replayed_body(body, receive)
        try:
            held = await self.store.claim(self.key, fp, self.token, self.rules.lock)
        except StoreUnavailable as exc:
            self.limits.on_store_failure(
                "idempotency", self.route, self.rules.failure, exc, "cannot check the key"
            )
            return Admitted(receive, send)  # failure: open, so without the guarantee
        if held is not None:
            return Admitted(receive, send, self._answer(held, fp))
        self._count("claimed")
        capture = ResponseCapture(
            send, self.rules.max_response, lambda answer: self._keep(answer, fp)
        )
        return Admitted(receive, capture, claim=(self, capture))

    async def finish(self, capture: ResponseCapture) -> None:
        if not capture.kept:  # failed, cut short, cancelled or to be retried: free the key
            await self._release()

    def _answer(self, held: Held, fp: str) -> StoredResponse:
        if held.fingerprint != fp:
            self._count("mismatch")
            raise IdempotencyMismatch(
                "this Idempotency-Key was used for a different request (method, path or body)"
            )
        if held.answer is None:
            self._count("conflict")
            raise IdempotencyConflict("a request with this Idempotency-Key is still in progress")
        if held.answer.body is None:
            self._count("not_kept")
            raise ResponseNotKept(
                f"the request with this Idempotency-Key was answered {held.answer.status}; "
                f"the answer was larger than {self.rules.max_response} bytes and was not kept"
            )
        self._count("replayed")
        return held.answer

    async def _keep(self, answer: StoredResponse | None, fp: str) -> bool:
        if answer is None:
            return False
        try:
            if not await self.store.complete(self.key, self.token, fp, answer, self.rules.ttl):
                self._count("lock_expired")  # ran longer than `lock`: another claim may hold it
                return True  # nothing of ours left to release
        except StoreUnavailable:
            self._count("store_error")  # the claim expires after `lock`
            return True
        self._count("kept" if answer.body is not None else "kept_head_only")
        return True

    async def _release(self) -> None:
        self._count("released")
        try:
            await self.store.release(self.key, self.token)
        except StoreUnavailable:
            self._count("store_error")  # the claim expires after `lock`


async def _read_body(headers: list[tuple[bytes, bytes]], receive: Receive, limit: int) -> bytes:
    """The whole request body (framed and capped as the forward stage reads it): the
    fingerprint needs it."""
    body, _ = request_body(headers, receive, limit)
    return b"" if body is None else b"".join([chunk async for chunk in body.stream()])


def _adding(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with


def _api_key(scope: Scope, header: bytes) -> str | None:
    if header:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in headers:
            if name == header:
                return ratelimit.api_key_client(value)
    return None


def client_address(scope: Scope, table: RouteTable) -> str:
    """The client's IP: the peer's, or behind trusted proxies the last untrusted hop of
    X-Forwarded-For (the one entry a client cannot forge)."""
    client = scope.get("client")
    peer: str = client[0] if client else "unknown"
    if not table.is_trusted(peer):
        return peer
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    hops = [
        hop.strip()
        for name, value in headers
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
    ]
    for hop in reversed(hops):
        if hop and not table.is_trusted(hop):
            return hop
    return peer
