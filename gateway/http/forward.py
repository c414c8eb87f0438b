"""The pipeline's last stages: the request as sent upstream, the exchange under the resilience
rules, the answer relayed to the client, and the copy for the shadow.

Forward exactly the normalised path (the route's `strip_prefix` applied), with the header
rules of `gateway.request.headers`; the client's body is read whole first
(`gateway.request.body`); a WebSocket upgrade goes to `gateway.http.upgrade` instead.
"""

from __future__ import annotations

import logging
import time

from gateway.base.types import BODY_FOLLOWS, Message, Receive, Send
from gateway.config.shadow import ShadowSettings
from gateway.http.upgrade import upgrade
from gateway.http.websocket import TUNNEL, WebSockets
from gateway.observe.throttle import Throttled
from gateway.request import headers as header_rules
from gateway.request.body import RequestBody, Tee, request_body
from gateway.request.client import Response
from gateway.request.context import RequestContext
from gateway.request.pools import Pools
from gateway.resilience.exchange import Resilience
from gateway.rollout.consistency import COMMIT_POSITION_KEY
from gateway.shadow.mirror import BODY_TOO_LARGE, Copy, Mirror, sampled

log = logging.getLogger("strangler.proxy")
failures = Throttled(log)  # one line per failure, at most one a second per upstream


class Forward:
    """Send the request to `ctx.upstream` and its answer to the client; sets `ctx.status`
    and `ctx.sent`. Raises the gateway's errors while nothing was sent."""

    def __init__(
        self, pools: Pools, resilience: Resilience, mirror: Mirror, websockets: WebSockets
    ) -> None:
        self.pools = pools
        self.resilience = resilience
        self.mirror = mirror
        self.websockets = websockets

    async def __call__(self, ctx: RequestContext, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        scope, table, route, upstream = ctx.scope, ctx.table, ctx.route, ctx.upstream
        assert upstream is not None and ctx.path is not None
        client = scope.get("client")
        peer = client[0] if client else None
        raw_headers = scope["headers"]
        ctx.headers = header_rules.upstream_request_headers(
            raw_headers,
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=table.is_trusted(peer),
            request_id=ctx.request_id,
            identity=ctx.identity,
        )
        target = (route.forward_path(ctx.path) if route else ctx.path).encode("ascii")
        query = scope.get("query_string", b"")
        ctx.target = target + b"?" + query if query else target
        extensions = scope.get("extensions")
        if extensions is not None and TUNNEL in extensions:
            take_over = extensions[TUNNEL]["take_over"]
            await upgrade(ctx, self.pools.get(upstream), self.websockets, take_over, send)
            return
        body, length = request_body(raw_headers, receive, ctx.body_limit)
        shadow = self._shadow(ctx, length)
        if body is not None:
            if shadow is not None:
                body.tee = Tee(shadow.max_body)
            length = await body.buffer(table.edge.body_buffer)  # ClientGone: the caller's 499
        try:
            response = await self.resilience.exchange(
                self.pools.get(upstream), ctx, body.chunks() if body else None, length
            )
        finally:
            if body is not None:
                body.close()
        copy = Tee(shadow.response_cap) if shadow is not None else None
        try:
            await relay(response, send, ctx, copy)
        finally:
            response.release()
        if shadow is not None and copy is not None:
            self._launch(ctx, shadow, body, response, copy, started)

    def _shadow(self, ctx: RequestContext, length: int | None) -> ShadowSettings | None:
        """The shadow settings when this request is to be mirrored, else None (and when it was
        sampled but is not admitted, the mirror has counted the drop)."""
        route, upstream = ctx.route, ctx.upstream
        if route is None or route.shadow is None or upstream is None:
            return None
        if route.shadow.upstream == upstream.name:  # a canary's candidate answered itself
            return None
        if not sampled(route.shadow, ctx.method, ctx.request_id):
            return None
        if length is not None and length > route.shadow.max_body:
            self.mirror.dropped(route, BODY_TOO_LARGE)
            return None
        return route.shadow if self.mirror.admit(route) else None

    def _launch(
        self,
        ctx: RequestContext,
        shadow: ShadowSettings,
        body: RequestBody | None,
        response: Response,
        copy: Tee,
        started: float,
    ) -> None:
        """Hand the exchange to the mirror, which sends the copy to the shadow and compares."""
        route, upstream, path = ctx.route, ctx.upstream, ctx.path
        assert route is not None and upstream is not None and path is not None
        body_copy = body.tee if body is not None else None
        if body_copy is not None and body_copy.truncated:
            self.mirror.dropped(route, BODY_TOO_LARGE)
            return
        self.mirror.launch(
            Copy(
                route,
                upstream,
                ctx.table.upstreams[shadow.upstream],
                ctx.method,
                path,
                ctx.target,
                ctx.headers,
                body_copy.data if body_copy is not None else None,
                response.status,
                response.headers,
                copy.data,
                copy.truncated,
                (time.perf_counter() - started) * 1000,
            )
        )


async def relay(response: Response, send: Send, ctx: RequestContext, copy: Tee | None) -> None:
    """Stream the upstream's answer to the client; sets `ctx.status` and `ctx.sent`."""
    upstream = ctx.upstream
    assert upstream is not None
    headers, position = header_rules.response_headers(
        response.headers,
        upstream=upstream,
        route=ctx.route,
        public_origin=ctx.public_origin,
        request_id=ctx.request_id,
    )
    if ctx.cookie is not None:  # the sticky split's cookie (gateway/rollout/sticky.py)
        headers.append((b"set-cookie", ctx.cookie))
    start: Message = {
        "type": "http.response.start",
        "status": response.status,
        "headers": headers,
    }
    if position is not None:  # for read-your-writes' `send`; the server ignores the key
        start[COMMIT_POSITION_KEY] = position
    if response.buffered:  # the first read does not wait: head and body in one write
        start[BODY_FOLLOWS] = True
    await send(start)
    sent = 0
    try:
        while True:
            chunk = await response.read()
            if not chunk:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                break
            sent += len(chunk)
            if copy is not None:
                copy.add(chunk)
            last = response.at_eof
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                break
    except Exception as exc:
        # Headers are out: all that is left is to end the response short, which the
        # server does by closing the connection, so the client sees the truncation.
        failures.warning(upstream.name, "upstream %s failed mid-response: %r", upstream.name, exc)
        if copy is not None:
            copy.truncated = True  # a shadow compares status and headers only
        ctx.status, ctx.sent = 502, sent
        return
    ctx.status, ctx.sent = response.status, sent
