"""The gateway's own endpoints under `/_strangler/`, never forwarded to an upstream.

`GET /_strangler/health` answers 200 once the gateway serves; `GET /_strangler/routes` shows
the active routes.yaml version (hash, loaded-at, source), the resolved table, the reload
history and the last rejected reload's errors.
"""

from __future__ import annotations

from gateway.errors import MethodNotAllowed, NotFound, send_json
from gateway.reload import RoutesWatcher
from gateway.types import Scope, Send

ADMIN_PREFIX = "/_strangler/"
ADMIN_HEALTH = ADMIN_PREFIX + "health"


class Admin:
    def __init__(self, watcher: RoutesWatcher) -> None:
        self.watcher = watcher

    async def handle(self, path: str, scope: Scope, send: Send, request_id: str) -> int:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"admin endpoints are read-only: {scope['method']} {path}")
        if path == ADMIN_HEALTH:
            body: dict[str, object] = {"status": "ok", "routes_version": self.watcher.table.version}
        elif path == ADMIN_PREFIX + "routes":
            failure = self.watcher.last_failure
            body = {
                **self.watcher.table.describe(),
                "history": [{"at": at, "version": v} for at, v in self.watcher.history],
                "last_rejected": (
                    {"at": failure.at, "errors": failure.errors} if failure else None
                ),
            }
        else:
            raise NotFound(f"no admin endpoint {path}")
        extra = [(b"x-request-id", request_id.encode())]
        await send_json(send, 200, body, extra)
        return 200
