"""The request path: plain ASGI from the socket to the upstream and back.

normalise the path once -> match a route on it -> forward exactly that path, with the
header rules of `gateway.http.headers`, streaming both bodies -> one access-log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from tempfile import SpooledTemporaryFile
from typing import TYPE_CHECKING

from gateway.config.paths import PathError, normalise
from gateway.config.reload import RoutesWatcher
from gateway.config.routes import Route, Upstream
from gateway.config.shadow import ShadowSettings
from gateway.config.table import RouteTable
from gateway.errors import (
    BadPath,
    BadRequest,
    BodyTooLarge,
    GatewayError,
    NoRoute,
    NotImplementedByGateway,
    ShuttingDown,
    send_error,
)
from gateway.http import headers as header_rules
from gateway.http.accesslog import AccessLog
from gateway.http.client import Response
from gateway.http.pools import Pools
from gateway.http.websocket import TUNNEL, TakeOver, Upgrade, WebSockets
from gateway.identity.guard import Access, Guard, Guards
from gateway.identity.tokens import Identity
from gateway.observe.admin import ADMIN_HEALTH, ADMIN_PREFIX, Admin
from gateway.observe.monitor import Monitor
from gateway.observe.throttle import Throttled
from gateway.resilience.exchange import Resilience
from gateway.rollout.assignment import Assigner
from gateway.rollout.consistency import COMMIT_POSITION_KEY, Consistency
from gateway.rollout.evidence import LiveEvidence
from gateway.shadow.mirror import BODY_TOO_LARGE, Copy, Mirror, Tee, sampled
from gateway.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.limits.gate import Limits  # which imports RequestBody from here

log = logging.getLogger("strangler.proxy")
_UPGRADE = [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]  # hop-by-hop: set anew
failures = Throttled(log)  # one line per failure, at most one a second per upstream
_BLOCK = 64 * 1024  # a buffered body is sent in blocks of this size


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class RequestBody:
    """The client's body, capped at `limit` bytes while it arrives, and read whole before any
    upstream is asked (nginx's proxy_request_buffering): a slow upload then holds a gateway
    connection, never an upstream one, and the upstream gets a Content-Length. Up to
    `edge.body_buffer` bytes stay in memory, the rest goes to a temporary file.

    A chunked upload has no Content-Length to check up front, so the cap is enforced as the
    bytes arrive: on overflow the client gets 413 and no upstream sees any of it.
    """

    def __init__(self, receive: Receive, limit: int, tee: Tee | None = None) -> None:
        self._receive = receive
        self._limit = limit
        self.tee = tee  # a copy for the shadow request
        self._spool: SpooledTemporaryFile[bytes] | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ClientGone when the client leaves first."""
        received = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > self._limit:
                raise _too_large(self._limit)
            if chunk:
                if self.tee is not None:
                    self.tee.add(chunk)
                yield chunk
            if not message.get("more_body", False):
                return

    async def buffer(self, memory: int) -> int:
        """Read the whole body; returns its size."""
        spool = SpooledTemporaryFile(max_size=memory)  # noqa: SIM115 (closed by close())
        try:
            async for chunk in self.stream():
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        self._spool = spool
        size = spool.tell()
        spool.seek(0)
        return size

    async def chunks(self) -> AsyncIterator[bytes]:
        """The buffered body, in blocks."""
        assert self._spool is not None
        while block := self._spool.read(_BLOCK):
            yield block

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


class Gateway:
    """The ASGI application. `watcher.table` is the live route table."""

    def __init__(
        self,
        watcher: RoutesWatcher,
        pools: Pools,
        guards: Guards,
        mirror: Mirror,
        access_log: AccessLog | None = None,
        monitor: Monitor | None = None,
        *,
        limits: Limits,
        resilience: Resilience | None = None,
        websockets: WebSockets | None = None,
    ) -> None:
        self.watcher = watcher
        self.monitor = monitor or Monitor(watcher, mirror)  # counts; /metrics, the dashboard
        self.pools = pools
        self.guards = guards
        self.mirror = mirror
        self.access_log = access_log
        self.limits = limits  # rate limits and idempotency keys, for routes that have them
        self.resilience = resilience or Resilience()  # timeouts, retries, breakers, shedding
        self.websockets = websockets or WebSockets()  # tunnels of routes with `websocket:`
        self.admin = Admin(watcher, mirror, self.resilience)
        self.assigner = Assigner()  # sticky splits and tester overrides, with their counters
        self.evidence = LiveEvidence()  # per-upstream outcomes of split routes, for promotion
        self.consistency = Consistency(limits)  # read-your-writes: pins after monolith writes
        self._guarded: tuple[RouteTable, Guard] | None = None  # the live table's guard

    def _guard(self, table: RouteTable) -> Guard:
        if self._guarded is None or self._guarded[0] is not table:
            self._guarded = (table, self.guards.get(table))
        return self._guarded[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is handled by the wrapping app; websockets are not proxied
        started = time.perf_counter()
        table = self.watcher.table  # one snapshot for the whole request
        request_id = header_rules.request_id(scope["headers"])
        route: Route | None = None
        upstream: Upstream | None = None
        path: str | None = None
        verdict: Access | None = None
        cookie: bytes | None = None
        measured = False
        status = 0
        sent = 0
        try:
            path = self._path(scope)
            guard = self._guard(table)
            if path.startswith(ADMIN_PREFIX):
                if path != ADMIN_HEALTH:  # liveness stays open to load balancers
                    verdict = await self.monitor.authorize_admin(scope, path, guard)
            elif path == table.metrics.path:
                verdict = await self.monitor.authorize_metrics(scope, path, guard, table)
            else:
                route, upstream = self._target(table, path, scope["method"])
                # the token, the sticky split, the policy, a tester's override
                verdict, upstream, cookie, measured = await self.assigner.choose(
                    guard, scope, path, table, route, upstream
                )
                if table.read_your_writes is not None and verdict.denial is None:
                    # a writer's reads go to the monolith until the CDC bridge caught up;
                    # `send` notes their writes (also the errors sent below)
                    upstream, send, pinned = await self.consistency.route(
                        table, route, upstream, scope, verdict, send
                    )
                    measured = measured and not pinned
            if verdict is not None and verdict.denial is not None:
                raise verdict.denial
            if upstream is None and self.monitor.serves(path, table):
                status = await self.monitor.handle(path, scope, send, request_id, table)
            elif upstream is None:  # an admin path
                status = await self.admin.handle(path, scope, send, request_id)
            elif route is not None and route.limits is not None:  # rate_limit, idempotency
                target, identity = upstream, verdict.identity if verdict else None
                status, sent = await self.limits.apply(
                    route,
                    table,
                    scope,
                    path,
                    identity,
                    request_id,
                    receive,
                    send,
                    lambda receive, send: self._proxy(
                        scope,
                        receive,
                        send,
                        table,
                        route,
                        target,
                        path,
                        request_id,
                        identity,
                        cookie,
                    ),
                )
            else:
                status, sent = await self._proxy(
                    scope,
                    receive,
                    send,
                    table,
                    route,
                    upstream,
                    path,
                    request_id,
                    verdict.identity if verdict else None,
                    cookie,
                )
        except GatewayError as exc:
            status = exc.status
            await send_error(send, exc, request_id)
        except asyncio.CancelledError:
            # The server's shutdown timeout (gateway/http/shutdown.py) ended the wait: the client
            # gets an answer if none began (else the connection closes with the answer short),
            # and the task ends here, quietly, as the server is ending it.
            status = 503
            with contextlib.suppress(Exception):
                await send_error(send, ShuttingDown("the gateway is shutting down", 1), request_id)
        except Exception:
            # Only reachable before the response starts: _relay handles what comes after.
            log.exception("request %s failed", request_id)
            status = 500
            await send_error(send, GatewayError("the gateway failed"), request_id)
        finally:
            elapsed = time.perf_counter() - started
            self.monitor.count(route, upstream, status, elapsed, verdict)
            if measured and route is not None and upstream is not None:
                self.evidence.observe(route.name, upstream.name, status, elapsed * 1000)
            if self.access_log is not None:
                self.access_log.write(
                    {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path if path is not None else scope["path"],
                        "route": route.name if route else None,
                        "upstream": upstream.name if upstream else None,
                        "status": status,
                        "bytes": sent,
                        "duration_ms": round(elapsed * 1000, 3),
                        "client": scope["client"][0] if scope.get("client") else None,
                        **_verdict_fields(verdict),
                    }
                )

    @staticmethod
    def _path(scope: Scope) -> str:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        try:
            return normalise(raw)
        except PathError as exc:
            raise BadPath(exc.detail) from exc

    @staticmethod
    def _target(table: RouteTable, path: str, method: str) -> tuple[Route | None, Upstream]:
        route = table.match(path, method)
        if route is not None:
            return route, table.upstreams[route.upstream]
        if table.default is None:
            raise NoRoute(f"no route for {method} {path}")
        return None, table.upstreams[table.default]

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        table: RouteTable,
        route: Route | None,
        upstream: Upstream,
        path: str,
        request_id: str,
        identity: Identity | None,
        cookie: bytes | None = None,
    ) -> tuple[int, int]:
        started = time.perf_counter()
        limit = route.max_body if route and route.max_body is not None else table.max_body
        client = scope.get("client")
        peer = client[0] if client else None
        raw_headers = scope["headers"]
        outgoing = header_rules.upstream_request_headers(
            raw_headers,
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=table.is_trusted(peer),
            request_id=request_id,
            identity=identity,
        )
        target = (route.forward_path(path) if route else path).encode("ascii")
        query = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        extensions = scope.get("extensions")
        if extensions is not None and TUNNEL in extensions:
            take_over = extensions[TUNNEL]["take_over"]
            upgrade = (route, upstream, target, outgoing)
            return await self._websocket(take_over, upgrade, scope, send, request_id, cookie)
        body, length = self._body(raw_headers, receive, limit)
        shadow = self._shadow(route, upstream, scope["method"], request_id, length)
        if body is not None:
            if shadow is not None:
                body.tee = Tee(shadow.max_body)
            try:
                length = await body.buffer(table.edge.body_buffer)
            except ClientGone:
                return 499, 0  # nginx's code for "client closed request"; nothing to send
        pool = self.pools.get(upstream)
        try:
            response = await self.resilience.exchange(
                pool,
                table,
                route,
                upstream,
                scope["method"],
                target,
                outgoing,
                body.chunks() if body else None,
                length,
            )
        finally:
            if body is not None:
                body.close()
        copy = Tee(shadow.response_cap) if shadow is not None else None
        try:
            status, sent = await self._relay(
                response, send, upstream, route, scope, request_id, copy, cookie
            )
        finally:
            response.release()
        if shadow is not None and copy is not None and route is not None:
            body_copy = body.tee if body is not None else None
            if body_copy is not None and body_copy.truncated:
                self.mirror.dropped(route, BODY_TOO_LARGE)
            else:
                self.mirror.launch(
                    Copy(
                        route,
                        upstream,
                        table.upstreams[shadow.upstream],
                        scope["method"],
                        path,
                        target,
                        outgoing,
                        body_copy.data if body_copy is not None else None,
                        response.status,
                        response.headers,
                        copy.data,
                        copy.truncated,
                        (time.perf_counter() - started) * 1000,
                    )
                )
        return status, sent

    async def _websocket(
        self,
        take_over: TakeOver,
        upgrade: tuple[Route | None, Upstream, bytes, list[tuple[bytes, bytes]]],
        scope: Scope,
        send: Send,
        request_id: str,
        cookie: bytes | None,
    ) -> tuple[int, int]:
        """A WebSocket upgrade, decided like any request: sent to the chosen upstream, and
        on its 101 the two connections spliced (gateway/http/websocket.py); never mirrored."""
        route, upstream, target, outgoing = upgrade
        if route is None or route.websocket is None:
            where = f"route {route.name!r}" if route else "this path"
            raise NotImplementedByGateway(f"{where} does not proxy WebSocket upgrades")
        pool = self.pools.get(upstream)
        # No compression through the gateway: `max_message` then limits what the upstream
        # really receives, not a compressed size (a small frame can inflate to gigabytes).
        kept = [h for h in outgoing if h[0] != b"sec-websocket-extensions"]
        head = pool.head("GET", target, [*kept, *_UPGRADE], None, None)
        sent = await self.websockets.connect(Upgrade(route, upstream, head, pool.tls))
        transport, status, raw, rest = sent
        headers, _ = header_rules.response_headers(
            raw,
            upstream=upstream,
            route=route,
            public_origin=lambda: _public_origin(scope),
            request_id=request_id,
        )
        if cookie is not None:  # a canary's sticky assignment, on the 101 too
            headers.append((b"set-cookie", cookie))
        if status != 101:  # the upstream refused: its answer, as any response
            headers = [h for h in headers if h[0] != b"content-length"]
            headers.append((b"content-length", b"%d" % len(rest)))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": rest})
            return status, len(rest)
        lines = [b"HTTP/1.1 101 Switching Protocols"]
        lines += [name + b": " + value for name, value in [*headers, *_UPGRADE]]
        client = take_over(b"\r\n".join(lines) + b"\r\n\r\n")
        await self.websockets.tunnel(route, client, (transport, rest))
        return 101, 0

    def _shadow(
        self,
        route: Route | None,
        upstream: Upstream,
        method: str,
        request_id: str,
        length: int | None,
    ) -> ShadowSettings | None:
        """The shadow settings when this request is to be mirrored, else None (and when it was
        sampled but is not admitted, the mirror has counted the drop)."""
        if route is None or route.shadow is None:
            return None
        if route.shadow.upstream == upstream.name:  # a canary's candidate answered itself
            return None
        if not sampled(route.shadow, method, request_id):
            return None
        if length is not None and length > route.shadow.max_body:
            self.mirror.dropped(route, BODY_TOO_LARGE)
            return None
        return route.shadow if self.mirror.admit(route) else None

    @staticmethod
    def _body(
        raw_headers: list[tuple[bytes, bytes]], receive: Receive, limit: int
    ) -> tuple[RequestBody | None, int | None]:
        """The body to stream and its length (None: chunked); no body -> (None, None)."""
        for name, value in raw_headers:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise BadRequest("invalid Content-Length") from None
                if length > limit:
                    raise _too_large(limit)
                return (RequestBody(receive, limit), length) if length else (None, None)
            if name == b"transfer-encoding":
                return RequestBody(receive, limit), None
        return None, None

    async def _relay(
        self,
        response: Response,
        send: Send,
        upstream: Upstream,
        route: Route | None,
        scope: Scope,
        request_id: str,
        copy: Tee | None,
        cookie: bytes | None = None,
    ) -> tuple[int, int]:
        """Stream the upstream's answer to the client; returns (status, body bytes)."""
        headers, position = header_rules.response_headers(
            response.headers,
            upstream=upstream,
            route=route,
            public_origin=lambda: _public_origin(scope),
            request_id=request_id,
        )
        if cookie is not None:  # the sticky split's cookie (gateway/rollout/sticky.py)
            headers.append((b"set-cookie", cookie))
        start: Message = {
            "type": "http.response.start",
            "status": response.status,
            "headers": headers,
        }
        if position is not None:  # for read-your-writes' `send`; the server ignores the key
            start[COMMIT_POSITION_KEY] = position
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
            failures.warning(
                upstream.name, "upstream %s failed mid-response: %r", upstream.name, exc
            )
            if copy is not None:
                copy.truncated = True  # a shadow compares status and headers only
            return 502, sent
        return response.status, sent


def _verdict_fields(verdict: Access | None) -> dict[str, object]:
    if verdict is None:
        return {}
    fields: dict[str, object] = {"user": verdict.identity.sub if verdict.identity else None}
    if verdict.decision is not None:
        fields["decision"] = {
            "id": verdict.decision.decision_id,
            "allow": verdict.decision.allow,
            "reason": verdict.decision.reason,
            "ms": round(verdict.authz_ms, 3),
        }
    return fields


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body exceeds {limit} bytes")


def _public_origin(scope: Scope) -> str:
    """The gateway's own origin as the client addressed it (for rewritten redirects)."""
    return f"{scope.get('scheme', 'http')}://{_host(scope)}"


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else "localhost"
