"""The forward stage of a WebSocket upgrade: decided like any request, then sent to the chosen
upstream and, on its 101, the two connections spliced (gateway/http/websocket.py); never
mirrored."""

from __future__ import annotations

from gateway.base.errors import NotImplementedByGateway
from gateway.base.types import Send
from gateway.http.websocket import TakeOver, Upgrade, WebSockets
from gateway.request import headers as header_rules
from gateway.request.client import Pool
from gateway.request.context import RequestContext

_UPGRADE = [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]  # hop-by-hop: set anew


async def upgrade(
    ctx: RequestContext, pool: Pool, websockets: WebSockets, take_over: TakeOver, send: Send
) -> None:
    """Sets `ctx.status` (101, or the upstream's refusal) and `ctx.sent`."""
    route, upstream = ctx.route, ctx.upstream
    assert upstream is not None
    if route is None or route.websocket is None:
        where = f"route {route.name!r}" if route else "this path"
        raise NotImplementedByGateway(f"{where} does not proxy WebSocket upgrades")
    # No compression through the gateway: `max_message` then limits what the upstream
    # really receives, not a compressed size (a small frame can inflate to gigabytes).
    kept = [h for h in ctx.headers if h[0] != b"sec-websocket-extensions"]
    head = pool.head("GET", ctx.target, [*kept, *_UPGRADE], None, None)
    transport, status, raw, rest = await websockets.connect(
        Upgrade(route, upstream, head, pool.tls)
    )
    headers, _ = header_rules.response_headers(
        raw,
        upstream=upstream,
        route=route,
        public_origin=ctx.public_origin,
        request_id=ctx.request_id,
    )
    if ctx.cookie is not None:  # a canary's sticky assignment, on the 101 too
        headers.append((b"set-cookie", ctx.cookie))
    if status != 101:  # the upstream refused: its answer, as any response
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"content-length", b"%d" % len(rest)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": rest})
        ctx.status, ctx.sent = status, len(rest)
        return
    lines = [b"HTTP/1.1 101 Switching Protocols"]
    lines += [name + b": " + value for name, value in [*headers, *_UPGRADE]]
    client = take_over(b"\r\n".join(lines) + b"\r\n\r\n")
    await websockets.tunnel(route, client, (transport, rest))
    ctx.status, ctx.sent = 101, 0
