"""The gateway's own endpoints under `/_strangler/`, never forwarded to an upstream.

`GET /_strangler/health` answers 200 once the gateway serves; `GET /_strangler/routes` shows
the active routes.yaml version (hash, loaded-at, source), the resolved table, the reload
history and the last rejected reload's errors; `GET /_strangler/shadow[?route=&since=1h]`
the shadow comparisons per route (the same numbers as `strangler shadow report`);
`GET /_strangler/upstreams` each upstream's in-flight count and limit, circuit breaker
state, retry and shed counters (gateway.resilience.exchange).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from common.validation import parse_duration
from gateway.base.errors import BadRequest, MethodNotAllowed, NotFound, send_json
from gateway.base.types import Scope, Send
from gateway.config.reload import RoutesWatcher
from gateway.resilience.exchange import Resilience
from gateway.shadow.mirror import Mirror
from gateway.shadow.report import report_json

ADMIN_PREFIX = "/_strangler/"
ADMIN_HEALTH = ADMIN_PREFIX + "health"


class Admin:
    def __init__(self, watcher: RoutesWatcher, mirror: Mirror, resilience: Resilience) -> None:
        self.watcher = watcher
        self.mirror = mirror
        self.resilience = resilience

    async def handle(self, path: str, scope: Scope, send: Send, request_id: str) -> int:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"admin endpoints are read-only: {scope['method']} {path}")
        if path == ADMIN_HEALTH:
            body: dict[str, object] = {"status": "ok", "routes_version": self.watcher.table.version}
        elif path == ADMIN_PREFIX + "routes":
            body = self.watcher.describe()
        elif path == ADMIN_PREFIX + "shadow":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            route = query.get("route", [None])[0]
            since = None
            if "since" in query:
                try:
                    since = time.time() - parse_duration(query["since"][0])
                except ValueError as exc:
                    raise BadRequest(f"since: {exc}") from None
            await self.mirror.flush()  # what was compared so far, not what the last batch held
            body = report_json(await self.mirror.store.summary(route=route, since=since))
        elif path == ADMIN_PREFIX + "upstreams":
            body = self.resilience.describe(self.watcher.table)
        else:
            raise NotFound(f"no admin endpoint {path}")
        extra = [(b"x-request-id", request_id.encode())]
        await send_json(send, 200, body, extra)
        return 200
