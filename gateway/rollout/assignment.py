"""Which upstream answers a request: the route's sticky split, or a tester's override.

Per request, after the token is verified (`Assigner.split`, before the policy is asked, and
`Assigner.choose`, after it):

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

from gateway.base.errors import BadTarget
from gateway.config.routes import NO_ROUTE, Route, Upstream
from gateway.config.table import RouteTable
from gateway.request.context import RequestContext
from gateway.rollout import sticky

OVERRIDE_HEADER = b"x-strangler-target"
_MAX_TARGET = 64  # upstream names are at most 64 characters


@dataclass
class AssignmentStats:
    assigned: Counter[str] = field(default_factory=Counter)  # split picks, by upstream
    overrides: Counter[str] = field(default_factory=Counter)  # honoured, by upstream
    overrides_ignored: int = 0  # asked by callers the policy does not let choose
    cookies_set: int = 0


class Assigner:
    """Two stages of the request pipeline, on either side of the policy: `split` before it
    (the policy is asked about the split's pick and the override), `choose` after it."""

    def __init__(self) -> None:
        self.stats: dict[str, AssignmentStats] = {}

    def split(self, ctx: RequestContext) -> None:
        """The split's pick for `ctx.upstream`, its Set-Cookie value, and the override the
        client asked for (`ctx.override`), which the policy rules on."""
        scope, route = ctx.scope, ctx.route
        headers = scope["headers"]
        for name, value in headers:
            if name == OVERRIDE_HEADER:
                ctx.override = value[:_MAX_TARGET].decode("latin-1").strip()
                break
        if route is None or route.rollout.split is None:
            return
        table, identity, client = ctx.table, ctx.identity, scope.get("client")
        key, ctx.cookie = sticky.key(
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
        if ctx.cookie is not None:
            stats.cookies_set += 1
        ctx.upstream = table.upstreams[picked]

    def choose(self, ctx: RequestContext) -> None:
        """The upstream once the policy has allowed the request and ruled on the override
        (`ctx.access`); only the split's own picks are evidence of it (`ctx.measured`)."""
        route = ctx.route
        measured = route is not None and route.rollout.split is not None
        if ctx.override is not None:
            chosen = self._honour(ctx, ctx.override)
            if chosen is not ctx.upstream:
                ctx.upstream, measured = chosen, False
        ctx.measured = measured

    def _honour(self, ctx: RequestContext, override: str) -> Upstream | None:
        table, route, access = ctx.table, ctx.route, ctx.access
        stats = self._stats(route.name if route is not None else NO_ROUTE)
        if access is None or access.decision is None or not access.decision.override:
            stats.overrides_ignored += 1
            return ctx.upstream
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
