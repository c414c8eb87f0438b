"""The ASGI entry: every HTTP request through one pipeline of plain stages, in a fixed order.

    normalise the path -> match a route -> the gateway's own endpoints (admin, dashboard,
    /metrics: answered here) -> authenticate -> the split's pick -> authorize (the policy
    rules on the pick and on a tester's override) -> choose the upstream (the override;
    read-your-writes' pin) -> limits (rate limit, idempotency key) -> forward (resilience,
    the exchange, the relay, the shadow's copy) -> record (counters, evidence, access log)

One `RequestContext` carries what each stage found to the next. A stage raises the gateway
error that answers the request; the pipeline sends it, and the record stage always runs.
The stages live in gateway.http.stages and gateway.http.forward, and in the features they
belong to (the assigner, read-your-writes, the limits); none calls back into the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.base.errors import GatewayError, ShuttingDown, send_error
from gateway.base.types import Receive, Scope, Send
from gateway.config.reload import RoutesWatcher
from gateway.http.forward import Forward
from gateway.http.stages import (
    Endpoints,
    RequestRecord,
    anonymous,
    authenticate_request,
    authorize_request,
    match_route,
    no_policy,
    normalise_path,
)
from gateway.identity.guard import Guards
from gateway.limits.gate import Limits
from gateway.limits.idempotency import replay
from gateway.request import headers as header_rules
from gateway.request.body import ClientGone
from gateway.request.context import RequestContext
from gateway.rollout.assignment import Assigner
from gateway.rollout.consistency import Consistency

log = logging.getLogger("strangler.proxy")


class Gateway:
    """The ASGI application. `watcher.table` is the live route table; every collaborator is
    built by the composition root (gateway/app.py) and handed in."""

    def __init__(
        self,
        watcher: RoutesWatcher,
        guards: Guards,
        endpoints: Endpoints,
        assigner: Assigner,
        consistency: Consistency,
        limits: Limits,
        forward: Forward,
        record: RequestRecord,
    ) -> None:
        self.watcher = watcher
        self.guards = guards
        self.endpoints = endpoints
        self.assigner = assigner  # sticky splits and tester overrides, with their counters
        self.consistency = consistency  # read-your-writes: pins after monolith writes
        self.limits = limits  # rate limits and idempotency keys, for routes that have them
        self.forward = forward
        self.record = record
        self.evidence = record.evidence  # per-upstream outcomes of split routes, for promotion

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is handled by the wrapping app; websockets are not proxied
        ctx = RequestContext(
            scope,
            self.watcher.table,
            header_rules.request_id(scope["headers"]),
            time.perf_counter(),
        )
        try:
            path = normalise_path(ctx)
            guard = self.guards.get(ctx.table)
            if self.endpoints.owns(ctx, path):
                await self.endpoints.serve(ctx, path, guard, send)
                return
            match_route(ctx, path)
            if not anonymous(ctx):
                await authenticate_request(ctx, guard)
            self.assigner.split(ctx)
            if not no_policy(ctx, guard):
                await authorize_request(ctx, guard)
            self.assigner.choose(ctx)
            if ctx.table.read_your_writes is not None:
                # a writer's reads go to the monolith until the CDC bridge caught up;
                # `send` notes their writes (also the errors sent below)
                send = await self._pin(ctx, send)
            if ctx.route is not None and ctx.route.limits is not None:
                await self._limited(ctx, receive, send)
            else:
                await self.forward(ctx, receive, send)
        except GatewayError as exc:
            ctx.status = exc.status
            await send_error(send, exc, ctx.request_id)
        except ClientGone:
            ctx.status = 499  # nginx's code for "client closed request"; nothing to send
        except asyncio.CancelledError:
            # The server's shutdown timeout (gateway/http/shutdown.py) ended the wait: the client
            # gets an answer if none began (else the connection closes with the answer short),
            # and the task ends here, quietly, as the server is ending it.
            ctx.status = 503
            with contextlib.suppress(Exception):
                shutting_down = ShuttingDown("the gateway is shutting down", 1)
                await send_error(send, shutting_down, ctx.request_id)
        except Exception:
            # Only reachable before the response starts: the relay handles what comes after.
            log.exception("request %s failed", ctx.request_id)
            ctx.status = 500
            await send_error(send, GatewayError("the gateway failed"), ctx.request_id)
        finally:
            self.record(ctx)

    async def _pin(self, ctx: RequestContext, send: Send) -> Send:
        """Read-your-writes (gateway/rollout/consistency.py): the upstream, and the `send` that
        pins a writer; a pinned read is not evidence of the split."""
        assert ctx.upstream is not None and ctx.access is not None
        ctx.upstream, send, pinned = await self.consistency.route(
            ctx.table, ctx.route, ctx.upstream, ctx.scope, ctx.access, send
        )
        ctx.measured = ctx.measured and not pinned
        return send

    async def _limited(self, ctx: RequestContext, receive: Receive, send: Send) -> None:
        """Forward as the route's limits say: a stored answer is replayed instead, and a
        claimed idempotency key is settled whatever the forward's outcome."""
        admitted = await self.limits.admit(ctx, receive, send)
        if admitted.stored is not None:
            ctx.status = admitted.stored.status
            ctx.sent = await replay(admitted.stored, admitted.send, ctx.request_id)
            return
        try:
            await self.forward(ctx, admitted.receive, admitted.send)
        finally:
            await admitted.finish()
