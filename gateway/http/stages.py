"""The request pipeline's stages before the upstream, and its last one (the record).

Each is a plain function (or a small class holding what it needs) of the request's
`RequestContext`: it fills in its part, or raises the gateway error that answers the request.
gateway.http.proxy calls them in order; none calls back into it.
"""

from __future__ import annotations

import time

from gateway.base.errors import BadPath, NoRoute
from gateway.base.types import Send
from gateway.config.paths import PathError, normalise
from gateway.http.accesslog import AccessLog
from gateway.identity.guard import Access, Guard
from gateway.observe.admin import ADMIN_HEALTH, ADMIN_PREFIX, Admin
from gateway.observe.monitor import Monitor
from gateway.request.context import RequestContext
from gateway.rollout.evidence import LiveEvidence


def normalise_path(ctx: RequestContext) -> str:
    """The path once, normalised (gateway/config/paths.py): what is matched and forwarded."""
    scope = ctx.scope
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    try:
        ctx.path = normalise(raw)
    except PathError as exc:
        raise BadPath(exc.detail) from exc
    return ctx.path


def match_route(ctx: RequestContext, path: str) -> None:
    """The route and its upstream; the default upstream for a path no route matches."""
    table = ctx.table
    route = ctx.route = table.match(path, ctx.method)
    if route is not None:
        ctx.upstream = table.upstreams[route.upstream]
    elif table.default is not None:
        ctx.upstream = table.upstreams[table.default]
    else:
        raise NoRoute(f"no route for {ctx.method} {path}")


async def authenticate_request(ctx: RequestContext, guard: Guard) -> None:
    """Who is asking: the verified bearer token; raises Unauthorized (or BadRequest)."""
    ctx.identity = await guard.authenticate(ctx.scope, ctx.table.auth_mode(ctx.route))


def anonymous(ctx: RequestContext) -> bool:
    """The route's `auth` is `none`: nobody is asked who they are (the pipeline skips the
    authenticate stage, which would find no identity)."""
    return ctx.table.auth_mode(ctx.route) == "none"


def no_policy(ctx: RequestContext, guard: Guard) -> bool:
    """`authz: none`: no policy to ask, the request is allowed (`ctx.access` says so, as
    Guard.authorize would, without the call)."""
    if guard.engine is not None:
        return False
    ctx.access = Access(ctx.identity, None, 0.0)
    return True


async def authorize_request(ctx: RequestContext, guard: Guard) -> None:
    """Whether they may, as the policy says for the split's pick and the override asked for;
    raises the denial (after it is in `ctx.access`, which the record logs)."""
    route, upstream = ctx.route, ctx.upstream
    assert ctx.path is not None and upstream is not None
    access = ctx.access = await guard.authorize(
        ctx.scope,
        ctx.path,
        ctx.identity,
        route.name if route else None,
        upstream.name,
        route is not None and route.authz_failure == "open",
        ctx.override,
    )
    if access.denial is not None:
        raise access.denial


class Endpoints:
    """The gateway's own paths, answered here and never forwarded: the admin API and the
    dashboard under `/_strangler/`, and `/metrics`, each with its own access rule."""

    def __init__(self, admin: Admin, monitor: Monitor) -> None:
        self.admin = admin
        self.monitor = monitor

    @staticmethod
    def owns(ctx: RequestContext, path: str) -> bool:
        return path.startswith(ADMIN_PREFIX) or path == ctx.table.metrics.path

    async def serve(self, ctx: RequestContext, path: str, guard: Guard, send: Send) -> None:
        scope, table, monitor = ctx.scope, ctx.table, self.monitor
        if path.startswith(ADMIN_PREFIX):
            if path != ADMIN_HEALTH:  # liveness stays open to load balancers
                ctx.access = await monitor.authorize_admin(scope, path, guard)
        else:
            ctx.access = await monitor.authorize_metrics(scope, path, guard, table)
        if ctx.access is not None and ctx.access.denial is not None:
            raise ctx.access.denial
        if monitor.serves(path, table):
            ctx.status = await monitor.handle(path, scope, send, ctx.request_id, table)
        else:
            ctx.status = await self.admin.handle(path, scope, send, ctx.request_id)


class RequestRecord:
    """The last stage, whatever happened: the counters, the split's evidence, the access log."""

    def __init__(
        self, monitor: Monitor, evidence: LiveEvidence, access_log: AccessLog | None
    ) -> None:
        self.monitor = monitor
        self.evidence = evidence
        self.access_log = access_log

    def __call__(self, ctx: RequestContext) -> None:
        elapsed = time.perf_counter() - ctx.started
        route, upstream, scope = ctx.route, ctx.upstream, ctx.scope
        self.monitor.count(route, upstream, ctx.status, elapsed, ctx.access)
        if ctx.measured and route is not None and upstream is not None:
            self.evidence.observe(route.name, upstream.name, ctx.status, elapsed * 1000)
        if self.access_log is not None:
            self.access_log.write(
                {
                    "request_id": ctx.request_id,
                    "method": scope["method"],
                    "path": ctx.path if ctx.path is not None else scope["path"],
                    "route": route.name if route else None,
                    "upstream": upstream.name if upstream else None,
                    "status": ctx.status,
                    "bytes": ctx.sent,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": scope["client"][0] if scope.get("client") else None,
                    **access_fields(ctx.access),
                }
            )


def access_fields(access: Access | None) -> dict[str, object]:
    """Who asked and what the policy said, for the access log."""
    if access is None:
        return {}
    fields: dict[str, object] = {"user": access.identity.sub if access.identity else None}
    if access.decision is not None:
        fields["decision"] = {
            "id": access.decision.decision_id,
            "allow": access.decision.allow,
            "reason": access.decision.reason,
            "ms": round(access.authz_ms, 3),
        }
    return fields
