"""The gateway watching itself: counts every request, serves `/metrics` and the dashboard.

One object is the hook the request path calls: `count` once per request (plain counters,
`gateway.observe.traffic`), `authorize_metrics` and `handle` for the endpoints it owns. Everything
else, building Prometheus families, reading the CDC status, querying the shadow store,
happens when a scraper or the dashboard asks.
"""

from __future__ import annotations

import hmac

from gateway.base.errors import Forbidden, MethodNotAllowed, Unauthorized, send_json
from gateway.base.types import Scope, Send
from gateway.config.metrics import METRICS_ROUTE
from gateway.config.reload import RoutesWatcher
from gateway.config.routes import NO_ROUTE, Route, Upstream
from gateway.config.table import RouteTable
from gateway.identity.guard import Access, Guard, bearer_token
from gateway.observe.cdc import NOT_CONFIGURED, CdcSnapshot, read_status
from gateway.observe.dashboard import ASSET_HEADERS, ASSET_PATHS, DATA_PATH, PATHS, Dashboard
from gateway.observe.metrics import Metrics
from gateway.observe.traffic import ALLOW, DENY, ERROR, GATEWAY, Traffic

ADMIN_ROLE = "admin"


class CdcStatus:
    """The CDC bridge's status file, as a scrape or the dashboard last read it."""

    def __init__(self, watcher: RoutesWatcher) -> None:
        self.watcher = watcher
        self.last: CdcSnapshot = NOT_CONFIGURED

    async def read(self) -> CdcSnapshot:
        self.last = await read_status(self.watcher.table.cdc)
        return self.last


class Monitor:
    def __init__(
        self, traffic: Traffic, metrics: Metrics, dashboard: Dashboard, cdc: CdcStatus
    ) -> None:
        self.traffic = traffic
        self.metrics = metrics  # each source adds itself (gateway/app.py)
        self.dashboard = dashboard
        self.cdc = cdc

    def count(
        self,
        route: Route | None,
        upstream: Upstream | None,
        status: int,
        seconds: float,
        access: Access | None,
    ) -> None:
        """The request path's one call: the same route and upstream as the access log."""
        decision = None
        if access is not None and access.decision is not None:
            decision = ERROR if access.failed else ALLOW if access.decision.allow else DENY
        self.traffic.count(
            route.name if route is not None else NO_ROUTE,
            upstream.name if upstream is not None else GATEWAY,
            status,
            seconds,
            decision,
        )

    @staticmethod
    async def authorize_admin(scope: Scope, path: str, guard: Guard) -> Access:
        """The admin API is never anonymous, whatever `auth.default` says: a token is
        required, and the policy decides who (the bundled one: the role `admin`); with
        `authz: none`, the token must carry the role `admin`. Only the dashboard's static
        page, script and style load without one (they hold no data)."""
        if path in ASSET_PATHS:
            return await guard.check(scope, path, "optional", None, "gateway", False)
        access = await guard.check(scope, path, "required", None, "gateway", False)
        identity = access.identity
        if guard.engine is None and identity is not None and ADMIN_ROLE not in identity.roles:
            denial = Forbidden(f"the admin API needs the role {ADMIN_ROLE!r}")
            return Access(identity, None, access.authz_ms, denial)
        return access

    @staticmethod
    def serves(path: str, table: RouteTable) -> bool:
        return path in PATHS or path == table.metrics.path

    @staticmethod
    async def authorize_metrics(
        scope: Scope, path: str, guard: Guard, table: RouteTable
    ) -> Access | None:
        """Who may scrape, as `metrics.access` says (gateway/config/metrics.py)."""
        access = table.metrics.access
        if access == "policy":
            return await guard.check(
                scope, path, table.auth.default, METRICS_ROUTE, "gateway", False
            )
        if access == "token":
            token = bearer_token(scope["headers"])
            if token is None:
                raise Unauthorized("a bearer token is required", invalid_token=False)
            if not hmac.compare_digest(token.encode(), table.metrics.token):
                raise Unauthorized("not the metrics token", invalid_token=True)
        return None  # open

    async def handle(
        self, path: str, scope: Scope, send: Send, request_id: str, table: RouteTable
    ) -> int:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{path} is read-only: {scope['method']}")
        extra = [(b"x-request-id", request_id.encode())]
        if path == DATA_PATH:
            await send_json(send, 200, await self.dashboard.document(), extra)
            return 200
        if path == table.metrics.path:
            await self.cdc.read()  # the file is read here, off the collectors' sync path
            accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
            body, content_type = await self.metrics.render(accept.decode("latin-1"))
            headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
        else:
            body, asset_type = self.dashboard.asset(path)
            headers = [(b"content-type", asset_type), *ASSET_HEADERS]
        headers += [(b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return 200
