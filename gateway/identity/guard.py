"""Access control per request: authenticate the bearer token, then ask the policy.

One `Guard` serves one (auth, authz) configuration; `Guards` keeps them across reloads
while their sections are unchanged (warm token and decision caches, kept JWKS keys) and
closes those a new table no longer uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gateway.base.errors import BadRequest, Forbidden, Unauthorized
from gateway.base.types import Scope
from gateway.config.access import AuthSettings, AuthzSettings
from gateway.config.lifecycle import Kept
from gateway.config.table import RouteTable
from gateway.identity.decision_input import build_input
from gateway.identity.policy import (
    VOLATILE_HEADERS,
    CachedPolicy,
    Decision,
    EmbeddedPolicy,
    PolicyEngine,
    PolicyError,
    create_engine,
)
from gateway.identity.tokens import Authenticator, Identity, InvalidToken, RevocationStore

log = logging.getLogger("strangler.guard")
_VOLATILE = frozenset(name.encode() for name in VOLATILE_HEADERS)


@dataclass(frozen=True, slots=True)
class Access:
    identity: Identity | None
    decision: Decision | None
    authz_ms: float
    denial: Forbidden | None = None  # set when the request must not pass
    failed: bool = False  # the engine failed; the route's authz_failure decided


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The bearer token of the Authorization header; tokens anywhere else are ignored."""
    values = [value for name, value in headers if name == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("more than one Authorization header")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Guard:
    def __init__(
        self,
        auth: AuthSettings,
        authz: AuthzSettings | None,
        revocations: RevocationStore,
    ) -> None:
        self.authenticator = Authenticator(auth, revocations)
        self.policy: PolicyEngine | None = None  # the engine itself
        self.engine: PolicyEngine | None = None  # what requests ask: the engine or its cache
        if authz is not None:
            self.policy = self.engine = create_engine(
                authz.engine,
                policies=authz.policies,
                url=authz.url,
                package=authz.package,
                timeout=authz.timeout,
            )
            if authz.cache_ttl > 0:
                cache = CachedPolicy(self.policy, ttl=authz.cache_ttl, max_entries=authz.cache_size)
                if isinstance(self.policy, EmbeddedPolicy):
                    self.policy.on_swap = lambda _version: cache.clear()  # no stale decisions
                self.engine = cache
        self._started: asyncio.Task[None] | None = None

    async def _ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.create_task(self._start())
        if not self._started.done():
            await self._started

    async def _start(self) -> None:
        if self.engine is not None:
            await self.engine.start()

    def reload_policy(self) -> bool:
        """Reload changed policy files (embedded engine); a broken file keeps the old policy."""
        if isinstance(self.policy, EmbeddedPolicy) and self.policy.changed():
            return self.policy.reload()
        return False

    async def close(self) -> None:
        await self.authenticator.close()
        if self.engine is not None:
            await self.engine.close()

    async def check(
        self,
        scope: Scope,
        path: str,
        mode: str,
        route: str | None,
        target: str,
        fail_open: bool,
    ) -> Access:
        """Who is asking and whether they may. Raises Unauthorized (or BadRequest); a denial
        comes back in the Access, so that it is logged with who was denied and why."""
        identity = await self.authenticate(scope, mode)
        return await self.authorize(scope, path, identity, route, target, fail_open)

    async def authenticate(self, scope: Scope, mode: str) -> Identity | None:
        """The verified identity of the bearer token; raises Unauthorized (or BadRequest)."""
        token = bearer_token(scope["headers"])
        identity = None
        if mode != "none" and token is not None:
            try:
                identity = await self.authenticator.authenticate(token)
            except InvalidToken as exc:
                raise Unauthorized(exc.description, invalid_token=True) from None
        if mode == "required" and identity is None:
            raise Unauthorized("a bearer token is required", invalid_token=False)
        return identity

    async def authorize(
        self,
        scope: Scope,
        path: str,
        identity: Identity | None,
        route: str | None,
        target: str,
        fail_open: bool,
        override: str | None = None,
    ) -> Access:
        """Whether `identity` may; `override` is the target the client asked for, which the
        policy lets it choose or not (`Decision.override`)."""
        if self.engine is None:
            return Access(identity, None, 0.0)
        if self._started is None or not self._started.done():
            await self._ensure_started()
        client = scope.get("client")
        peer = client[0] if client else None
        query = scope.get("query_string", b"")
        scheme = scope.get("scheme", "http")

        def document() -> dict[str, object]:
            return build_input(
                method=scope["method"],
                path=path,
                query=query,
                headers=scope["headers"],
                scheme=scheme,
                peer=peer,
                claims=identity.claims if identity else {},
                route=route,
                target=target,
                override=override,
            )

        started = time.perf_counter()
        failed = False
        try:
            if isinstance(self.engine, CachedPolicy):
                key = (scope["method"], path, query, scheme, peer, route, target, override)
                headers, size = _kept_headers(scope["headers"], len(path) + len(query))
                decision = await self.engine.decide_keyed((*key, headers), document, size)
            else:
                decision = await self.engine.decide(document())
        except PolicyError as exc:
            log.warning(
                "policy failed (route %s fails %s): %r",
                route,
                "open" if fail_open else "closed",
                exc,
            )
            decision = Decision(allow=fail_open, reason=f"policy unavailable: {exc}")
            failed = True
        elapsed = (time.perf_counter() - started) * 1000
        denial = None
        if not decision.allow:
            denial = Forbidden(decision.reason or "denied by policy")
        return Access(identity, decision, elapsed, denial, failed)


def _kept_headers(
    headers: list[tuple[bytes, bytes]], size: int
) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
    """The headers the decision depends on (all but the volatile ones), and `size` plus their
    values' bytes: with the request line, everything the input is built from, the token
    included; hashing this is several times cheaper than serialising the input."""
    kept = []
    for header in headers:
        if header[0] not in _VOLATILE:
            kept.append(header)
            size += len(header[1])
    return tuple(kept), size


class Guards:
    """One guard per (auth, authz) configuration, kept across reloads that keep it."""

    def __init__(self, revocations: RevocationStore) -> None:
        self.revocations = revocations
        self._guards: Kept[tuple[AuthSettings, AuthzSettings | None], Guard] = Kept(Guard.close)
        self._last: tuple[RouteTable, Guard] | None = None  # the live table's, asked per request

    def get(self, table: RouteTable) -> Guard:
        last = self._last
        if last is None or last[0] is not table:
            last = self._last = (table, self._guards.get((table.auth, table.authz), self._new))
        return last[1]

    def _new(self, key: tuple[AuthSettings, AuthzSettings | None]) -> Guard:
        return Guard(*key, self.revocations)

    def retain_only(self, table: RouteTable) -> None:
        keep = (table.auth, table.authz)
        self._guards.retain(lambda key, _: key == keep)

    def reload_policies(self) -> None:
        for guard in self._guards.live.values():
            guard.reload_policy()

    async def close(self) -> None:
        self._last = None
        await self._guards.close()
