"""Build the gateway: the route table, the pools and the reload watcher, in a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from gateway.accesslog import AccessLog
from gateway.config import RouteTable
from gateway.guard import Guards
from gateway.pools import Pools
from gateway.proxy import Gateway
from gateway.reload import RoutesWatcher
from gateway.resilience import Resilience
from gateway.shadow import Mirror
from gateway.shadow_store import create_store
from gateway.tokens import InMemoryRevocations, RevocationStore
from gateway.types import Receive, Scope, Send

log = logging.getLogger("strangler.gateway")


class GatewayApp:
    """ASGI entry point: lifespan here, every HTTP request straight to `Gateway`."""

    def __init__(
        self,
        routes: str | Path,
        reload_interval: float = 1.0,
        access_log: AccessLog | None = None,
        revocations: RevocationStore | None = None,
    ) -> None:
        self.pools = Pools()
        self.resilience = Resilience()
        self.guards = Guards(revocations or InMemoryRevocations())
        self.watcher = RoutesWatcher(routes, on_swap=self._swapped)
        self.access_log = access_log
        # The store is read at start-up; it is opened (and its schema made) on first use.
        store = self.watcher.table.shadow_store
        self.mirror = Mirror(create_store(store.url), store)
        self.gateway = Gateway(
            self.watcher, self.pools, self.guards, self.mirror, access_log, self.resilience
        )
        self.reload_interval = reload_interval
        self._watch_task: asyncio.Task[None] | None = None

    def _swapped(self, table: RouteTable) -> None:
        self.pools.retain_only(table)
        self.resilience.retain_only(table)
        self.guards.retain_only(table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.gateway(scope, receive, send)

    async def startup(self) -> None:
        if self.reload_interval > 0:
            self._watch_task = asyncio.create_task(self._watch())
        table = self.watcher.table
        log.info("gateway serving routes version %s from %s", table.version, table.source)

    async def _watch(self) -> None:
        """Poll routes.yaml and the policy files; each reload validates before it swaps."""
        while True:
            await asyncio.sleep(self.reload_interval)
            if self.watcher.changed():
                self.watcher.reload()
            self.guards.reload_policies()

    async def shutdown(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        self.pools.close()
        self.resilience.close()
        await self.guards.close()
        await self.mirror.close()
        if self.access_log is not None:
            self.access_log.flush()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
