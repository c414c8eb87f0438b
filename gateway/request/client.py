"""The upstream HTTP/1.1 client: keep-alive connection pools on asyncio protocols.

Why not a general-purpose client: the hot path needs one thing, forwarding bytes, and the
candidates were measured on this machine (2 cores; wrk, 32 connections; a 105-byte JSON
upstream), the same minimal ASGI proxy built on each, in one run: an aiohttp ClientSession
9.0k-10.0k req/s, this pool 22.6k-23.6k, httpx's pool about 0.6k (a one-off comparison when
the pool was written; `strangler bench proxy` keeps measuring it against nginx). The
response is parsed by httptools (llhttp, Node's parser, the one uvicorn uses) in
`gateway.request.connection`, so framing (chunked, Content-Length, 1xx, 204/304,
read-until-close) is not ours to get wrong; this module only moves bytes and keeps
connections.

Behaviour:
- bodies stream both ways with back-pressure (pause_reading/pause_writing);
- each request has its `Timeouts` (gateway.config.resilience; the upstream's unless a
  route overrides them): `connect` bounds the TCP connect, `first_byte` the wait from the
  request being sent to the response head, `idle` the wait for a free connection and every
  wait for more body bytes, and the absolute `deadline` (loop time) all of them together;
- a pooled connection the upstream closed while idle is detected when its request fails
  before any response byte arrives; bodiless requests are then retried once on a new
  connection (RFC 9112 9.3.1), requests with a body are not, since it may have been read.
  This is part of one attempt, apart from the retry policy of `gateway.resilience.exchange`;
- errors are raised as `gateway.base.errors` types: `UpstreamUnavailable` (`ConnectFailed`,
  `ConnectionDropped`), `UpstreamTimeout` (`ConnectTimeout`).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Callable

from gateway.base.errors import (
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.config.resilience import Timeouts, timeouts
from gateway.config.routes import HOST_CLIENT, HOST_UPSTREAM, Upstream
from gateway.request.connection import HIGH_WATER, UpstreamConnection

_CRLF = b"\r\n"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SLOW_HEAD = "the upstream did not answer in time"
_SLOW_BODY = "the upstream stopped sending its response"


class BodySourceError(Exception):
    """Reading the client's request body failed; the upstream request was abandoned."""


class Response:
    """An upstream response whose body is read chunk by chunk; release() when done."""

    def __init__(self, pool: Pool, conn: UpstreamConnection, idle: float, deadline: float) -> None:
        self._pool = pool
        self._conn = conn
        self._idle = idle
        self._deadline = deadline
        self.status = conn.status
        self.headers = conn.headers
        self.error: Exception | None = None  # what cut the body short, once read() raised it
        # set by gateway.resilience.exchange: told how the body ended when the response is released
        self.on_release: Callable[[Exception | None], None] | None = None

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end of the body."""
        conn = self._conn
        # Only a wait checks the deadline: while chunks are buffered the client is the slow
        # side, and the buffer is bounded (HIGH_WATER), so a wait comes soon enough.
        while not conn.chunks:
            if conn.error is not None:
                self.error = conn.error
                raise conn.error
            if conn.complete:
                return b""
            try:
                await conn.wait(self._idle, self._deadline, _SLOW_BODY)
            except UpstreamTimeout as exc:
                self.error = exc
                raise
        chunk = conn.chunks.popleft()
        conn.buffered -= len(chunk)
        if conn.paused and conn.buffered < HIGH_WATER // 4 and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        return chunk

    @property
    def buffered(self) -> bool:
        """True when the next read() returns without waiting: a chunk, the end or an error."""
        conn = self._conn
        return bool(conn.chunks) or conn.complete or conn.error is not None

    @property
    def at_eof(self) -> bool:
        """True when every body byte has been read (lets the caller end early)."""
        return self._conn.complete and not self._conn.chunks

    def release(self) -> None:
        self._pool.release(self._conn)
        if self.on_release is not None:
            self.on_release(self.error)


class Pool:
    """Keep-alive connections to one upstream, at most `upstream.pool` of them."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        scheme, host, port = upstream.origin
        self._host, self._port = host, port
        self.tls = _tls_context(upstream) if scheme == "https" else None
        own = upstream.url.split("://", 1)[1]
        self._own_host = own.encode("ascii")  # also when a client sent none (HTTP/1.0)
        self._fixed_host = (
            None
            if upstream.host == HOST_CLIENT
            else (own if upstream.host == HOST_UPSTREAM else upstream.host).encode("ascii")
        )
        self._timeouts = timeouts(upstream)
        self._idle: list[UpstreamConnection] = []
        self._count = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.closing = False

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None = None,
        content_length: int | None = None,
        limits: Timeouts | None = None,
        deadline: float | None = None,
    ) -> Response:
        """Send one request; return once the response head has arrived.

        `limits`: the route's timeouts (default: the upstream's); `deadline`: the loop time
        by which the whole exchange must be over (default: now + `limits.deadline`).
        """
        limits = limits or self._timeouts
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + limits.deadline
        head = self.head(method, target, headers, body, content_length)
        for attempt in (1, 2):
            conn = await self._acquire(limits, deadline)
            reused = conn.used
            conn.used = True
            conn.reset(method == "HEAD")
            try:
                await self._send(conn, head, body, content_length, deadline)
                # From the request sent, whatever arrives: a head trickled out in pieces does
                # not restart it.
                head_by = loop.time() + limits.first_byte
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(head_by - loop.time(), deadline, _SLOW_HEAD)
            except UpstreamUnavailable:
                self.release(conn)
                stale = reused and not conn.got_bytes and body is None
                if stale and attempt == 1:
                    continue  # the upstream closed an idle connection as we sent
                raise
            except BaseException:
                self.release(conn)
                raise
            return Response(self, conn, limits.idle, deadline)
        raise AssertionError("unreachable")

    def head(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
        content_length: int | None,
    ) -> bytes:
        """The request head: `headers` start with the client's Host when it sent one, which
        is kept or replaced as the upstream's `host:` says."""
        line = b"%s %s HTTP/1.1" % (method.encode("ascii"), target)
        client_host = bool(headers) and headers[0][0] == b"host"
        if client_host and self._fixed_host is None:
            lines = [line]
        else:
            lines = [line + b"\r\nhost: " + (self._fixed_host or self._own_host)]
            if client_host:
                headers = headers[1:]
        lines += [name + b": " + value for name, value in headers]
        # The framing of what is sent, written here and nowhere else (`headers` has none).
        if body is None:
            if method in _BODY_METHODS:
                lines.append(b"content-length: 0")  # RFC 9110 8.6: a body-less POST says so
        elif content_length is None:
            lines.append(b"transfer-encoding: chunked")
        else:
            lines.append(b"content-length: %d" % content_length)
        lines.append(_CRLF)
        return _CRLF.join(lines)

    async def _send(
        self,
        conn: UpstreamConnection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        content_length: int | None,
        deadline: float,
    ) -> None:
        transport = conn.transport
        assert transport is not None
        if conn.closed:
            raise ConnectionDropped("the upstream closed the connection")
        transport.write(head)
        if body is None:
            return
        chunked = content_length is None
        sent = 0
        try:
            async for chunk in body:
                sent += len(chunk)
                if chunked:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    transport.write(chunk)
                await conn.drain(deadline)
        except (UpstreamUnavailable, UpstreamTimeout):
            raise
        except Exception as exc:
            conn.abort()  # the upstream must never see a truncated body as complete
            raise BodySourceError(str(exc)) from exc
        if chunked:
            transport.write(b"0\r\n\r\n")
        elif sent != content_length:
            conn.abort()
            raise BodySourceError("the request body was shorter than its Content-Length")

    async def _acquire(self, limits: Timeouts, deadline: float) -> UpstreamConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._count -= 1
        loop = asyncio.get_running_loop()
        if self._count >= self.upstream.pool:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(min(loop.time() + limits.idle, deadline)):
                    await waiter
            except TimeoutError:
                raise UpstreamTimeout("no free connection to the upstream in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            return await self._acquire(limits, deadline)
        self._count += 1
        try:
            return await self._connect(min(loop.time() + limits.connect, deadline))
        except BaseException:
            self._count -= 1
            self._wake_one()
            raise

    async def _connect(self, until: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(until):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(loop), self._host, self._port, ssl=self.tls
                )
        except TimeoutError:
            raise ConnectTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream: {exc}") from exc
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.reusable and not self.closing:
            self._idle.append(conn)
        else:
            if not conn.closed:
                conn.abort()
            self._count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closing = True
        for conn in self._idle:
            conn.abort()
        self._count -= len(self._idle)
        self._idle.clear()


def _tls_context(upstream: Upstream) -> ssl.SSLContext:
    """Verify the upstream (its CA bundle, else the system's; hostname checked) and, for
    mTLS, present the gateway's client certificate."""
    context = ssl.create_default_context(cafile=upstream.ca)
    if upstream.client_cert is not None:
        context.load_cert_chain(upstream.client_cert, upstream.client_key)
    return context
