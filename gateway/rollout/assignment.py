"""Which upstream answers a request: the route's sticky split, or a tester's override.

Per request (`Assigner.choose`), after the token is verified and before the policy is asked:

1. A split route (two or more live upstreams) hashes the caller's sticky key once
   (gateway/config/split.py, gateway/rollout/sticky.py); every other route keeps its one upstream.
2. `X-Strangler-Target: NAME` asks for an upstream. It is read here, from the client's
   headers, before they are filtered for the upstream (where every client X-Strangler-*
   header is dropped anyway), and handed to the policy as `input.override`. The policy's
   `override` rule decides (policies/authz.rego: role `migration-tester`); without a policy,
   or when it fails, nobody may override. A caller who may not has the header ignored.
3. An allowed override that names no upstream of the route (its weights, its upstream, its
   shadow candidate; the default upstream for unrouted paths) is a 400 `bad_target`.

Counters per route live in `stats` for the metrics and the dashboard to read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from gateway.config.routes import Route, Upstream
from gateway.config.table import RouteTable
from gateway.errors import BadTarget
from gateway.identity.guard import Access, Guard
from gateway.identity.policy import Decision
from gateway.identity.tokens import Identity
from gateway.observe.traffic import NO_ROUTE
from gateway.rollout import sticky
from gateway.types import Scope

OVERRIDE_HEADER = b"x-strangler-target"
_MAX_TARGET = 64  # upstream names are at most 64 characters


@dataclass
class AssignmentStats:
    assigned: Counter[str] = field(default_factory=Counter)  # split picks, by upstream
    overrides: Counter[str] = field(default_factory=Counter)  # honoured, by upstream
    overrides_ignored: int = 0  # asked by callers the policy does not let choose
    cookies_set: int = 0


class Assigner:
    def __init__(self) -> None:
        self.stats: dict[str, AssignmentStats] = {}

    async def choose(
        self,
        guard: Guard,
        scope: Scope,
        path: str,
        table: RouteTable,
        route: Route | None,
        upstream: Upstream,
    ) -> tuple[Access, Upstream, bytes | None, bool]:
        """(the verdict, the upstream, a Set-Cookie value, whether the answer is evidence of
        the split: its users' traffic, not what testers chose). Raises what the guard does."""
        identity = await guard.authenticate(scope, table.auth_mode(route))
        picked, override, cookie = self.assign(table, route, upstream, identity, scope)
        verdict = await guard.authorize(
            scope,
            path,
            identity,
            route.name if route else None,
            picked.name,
            route is not None and route.authz_failure == "open",
            override,
        )
        chosen = picked
        if verdict.denial is None and override is not None:
            chosen = self.honour(table, route, picked, override, verdict.decision)
        measured = (
            route is not None
            and route.rollout.split is not None
            and verdict.denial is None
            and chosen is picked
        )
        return verdict, chosen, cookie, measured

    def assign(
        self,
        table: RouteTable,
        route: Route | None,
        upstream: Upstream,
        identity: Identity | None,
        scope: Scope,
    ) -> tuple[Upstream, str | None, bytes | None]:
        """(the upstream, the override asked for, a Set-Cookie value) for this request."""
        headers = scope["headers"]
        override = None
        for name, value in headers:
            if name == OVERRIDE_HEADER:
                override = value[:_MAX_TARGET].decode("latin-1").strip()
                break
        if route is None or route.rollout.split is None:
            return upstream, override, None
        client = scope.get("client")
        key, cookie = sticky.key(
            table.rollout.sticky,
            identity.sub if identity is not None else None,
            headers,
            client[0] if client else None,
            scope.get("scheme", "http"),
            table.is_trusted,
        )
        picked = route.rollout.split.pick(key)
        stats = self._stats(route.name)
        stats.assigned[picked] += 1
        if cookie is not None:
            stats.cookies_set += 1
        return table.upstreams[picked], override, cookie

    def honour(
        self,
        table: RouteTable,
        route: Route | None,
        upstream: Upstream,
        override: str,
        decision: Decision | None,
    ) -> Upstream:
        """The upstream once the policy has ruled on `override`."""
        stats = self._stats(route.name if route is not None else NO_ROUTE)
        if decision is None or not decision.override:
            stats.overrides_ignored += 1
            return upstream
        allowed = targets(table, route)
        if override not in allowed:
            where = f"route {route.name!r}" if route is not None else "the default route"
            raise BadTarget(
                f"X-Strangler-Target: {override!r} is not an upstream of {where}"
                f" (choose one of: {', '.join(allowed) or 'none'})"
            )
        stats.overrides[override] += 1
        return table.upstreams[override]

    def _stats(self, route: str) -> AssignmentStats:
        stats = self.stats.get(route)
        if stats is None:
            stats = self.stats[route] = AssignmentStats()
        return stats


def targets(table: RouteTable, route: Route | None) -> list[str]:
    """The upstreams a tester may choose for `route`, in a stable order."""
    if route is None:
        return [table.default] if table.default else []
    named = {route.upstream, *(name for name, _ in route.rollout.weights)}
    if route.shadow is not None:
        named.add(route.shadow.upstream)
    return sorted(named)
