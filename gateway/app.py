"""The composition root: every object of the gateway is built here and handed to those that
use it (no constructor builds its collaborators); the lifespan starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path

from gateway.base.types import Receive, Scope, Send
from gateway.config.reload import RoutesWatcher
from gateway.config.table import RouteTable, require_shared_store
from gateway.http.accesslog import AccessLog
from gateway.http.forward import Forward
from gateway.http.proxy import Gateway
from gateway.http.shutdown import SHADOW_CLOSE_TIMEOUT
from gateway.http.stages import Endpoints, RequestRecord
from gateway.http.websocket import WebSockets, websocket_metrics
from gateway.identity.guard import Guards
from gateway.identity.tokens import RevocationStore
from gateway.limits.gate import Limits
from gateway.observe.admin import Admin
from gateway.observe.dashboard import Dashboard
from gateway.observe.feature_metrics import (
    consistency_metrics,
    limits_metrics,
    resilience_metrics,
    rollout_metrics,
)
from gateway.observe.metrics import (
    Metrics,
    cdc_metrics,
    routes_metrics,
    shadow_metrics,
    traffic_metrics,
)
from gateway.observe.monitor import CdcStatus, Monitor
from gateway.observe.siblings import Siblings, WorkerSlot
from gateway.observe.traffic import Traffic
from gateway.request.pools import Pools
from gateway.resilience.exchange import Resilience
from gateway.rollout.assignment import Assigner
from gateway.rollout.consistency import Consistency
from gateway.rollout.evidence import EvidenceStore, LiveEvidence
from gateway.rollout.promotion import Promoter
from gateway.shadow.store import create_store
from gateway.shadow.worker import create_mirror

log = logging.getLogger("strangler.gateway")


class GatewayApp:
    """ASGI entry point: lifespan here, every HTTP request straight to `Gateway`."""

    def __init__(
        self,
        routes: str | Path,
        reload_interval: float = 1.0,
        access_log: AccessLog | None = None,
        revocations: RevocationStore | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        """`worker`: this process's slot when `gateway serve --workers N` forked it
        (gateway/http/workers.py); None for one worker."""
        count = 1 if worker is None else worker.count
        self.watcher = RoutesWatcher(
            routes, on_swap=self._swapped, check=lambda t: require_shared_store(t, count)
        )
        table = self.watcher.table
        self.pools = Pools()
        self.resilience = Resilience()  # timeouts, retries, breakers, shedding
        self.websockets = WebSockets()  # tunnels of routes with `websocket:`
        # rate limits, idempotency keys and (unless given) revoked tokens, on `store:`
        self.limits = Limits(table.store)
        self.guards = Guards(revocations or self.limits)
        self.access_log = access_log
        # The store is read at start-up; it is opened (and its schema made) on first use.
        shadow_store = create_store(table.shadow_store.url)
        self.mirror = create_mirror(shadow_store, table.shadow_store, table.shadow_worker)
        # counts every request; serves /metrics and the dashboard
        traffic, cdc = Traffic(), CdcStatus(self.watcher)
        dashboard = Dashboard(self.watcher, traffic, self.mirror, cdc.read)
        self.monitor = Monitor(traffic, Metrics(), dashboard, cdc)
        live = LiveEvidence()  # per-upstream outcomes of split routes, for promotion
        self.gateway = Gateway(
            self.watcher,
            self.guards,
            Endpoints(Admin(self.watcher, self.mirror, self.resilience), self.monitor),
            Assigner(),  # sticky splits and tester overrides, with their counters
            Consistency(self.limits),  # read-your-writes: pins after monolith writes
            self.limits,
            Forward(self.pools, self.resilience, self.mirror, self.websockets),
            RequestRecord(self.monitor, live, access_log),
        )
        self._add_metrics()
        # several workers: a scrape gathers every worker's series (gateway/observe/siblings.py)
        self.siblings: Siblings | None = None
        if worker is not None and worker.count > 1:
            self.siblings = Siblings(worker, self.monitor.metrics.registry)
        self.monitor.metrics.siblings = self.siblings
        # rollout: evidence for promotion gates, saved next to the shadow comparisons
        replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.evidence = EvidenceStore(shadow_store.engine, replica)
        live.retarget(table)
        self.promoter = Promoter(self.watcher.path, live, self.evidence, self.mirror)
        self.reload_interval = reload_interval
        self._watch_task: asyncio.Task[None] | None = None

    def _add_metrics(self) -> None:
        """The features' stats on /metrics and the dashboard, read at scrape/poll time."""
        metrics, watcher, gateway = self.monitor.metrics, self.watcher, self.gateway
        metrics.add(lambda: traffic_metrics(self.monitor.traffic))
        metrics.add(lambda: routes_metrics(watcher))
        metrics.add(lambda: shadow_metrics(self.mirror))
        metrics.add(lambda: cdc_metrics(self.monitor.cdc.last))
        metrics.add(lambda: resilience_metrics(self.resilience, watcher.table))
        metrics.add(lambda: limits_metrics(self.limits.stats, watcher.table))
        metrics.add(lambda: rollout_metrics(gateway.assigner, gateway.evidence, watcher.table))
        metrics.add(lambda: consistency_metrics(gateway.consistency))
        metrics.add(lambda: websocket_metrics(self.websockets.stats))
        self.monitor.dashboard.add("resilience", lambda: self.resilience.describe(watcher.table))

    def _swapped(self, table: RouteTable) -> None:
        self.pools.retain_only(table)
        self.resilience.retain_only(table)
        self.guards.retain_only(table)
        self.limits.retain_only(table)
        self.gateway.evidence.retarget(table)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.gateway(scope, receive, send)

    async def startup(self) -> None:
        if self.reload_interval > 0:
            self._watch_task = asyncio.create_task(self._watch())
        if self.siblings is not None:
            await self.siblings.start()
        table = self.watcher.table
        log.info("gateway serving routes version %s from %s", table.version, table.source)

    async def _watch(self) -> None:
        """Poll routes.yaml and the policy files; each reload validates before it swaps."""
        while True:
            await asyncio.sleep(self.reload_interval)
            if self.watcher.changed():
                self.watcher.reload()
            self.guards.reload_policies()
            await self.promoter.tick(self.watcher.table)  # saves evidence; `auto` gates

    async def shutdown(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self.siblings is not None:
            await self.siblings.close()
        self.websockets.close()
        self.pools.close()
        self.resilience.close()
        await self.guards.close()
        await self.promoter.save()  # the evidence since the last save
        try:
            async with asyncio.timeout(SHADOW_CLOSE_TIMEOUT):
                await self.mirror.close()
        except TimeoutError:  # the stop is bounded (gateway/http/shutdown.py): give up the rest
            log.warning(
                "shadow comparisons still running after %.0f s were dropped at shutdown",
                SHADOW_CLOSE_TIMEOUT,
            )
        await self.gateway.consistency.close()  # read-your-writes' position readers
        await self.limits.close()
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
