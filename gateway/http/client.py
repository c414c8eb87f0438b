"""The upstream HTTP/1.1 client: keep-alive connection pools on asyncio protocols.

Why not a general-purpose client: the hot path needs one thing, forwarding bytes, and the
candidates were measured on this machine (2 cores; wrk, 32 connections; a 105-byte JSON
upstream), the same minimal ASGI proxy built on each, in one run: an aiohttp ClientSession
9.0k-10.0k req/s, this pool 22.6k-23.6k, httpx's pool about 0.6k (a one-off comparison when
the pool was written; `strangler bench proxy` keeps measuring it against nginx). The
response is parsed by httptools (llhttp, Node's parser, the one uvicorn uses), so framing
(chunked, Content-Length, 1xx, 204/304, read-until-close) is not ours to get wrong; this
module only moves bytes and keeps connections.

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
- errors are raised as `gateway.errors` types: `UpstreamUnavailable` (`ConnectFailed`,
  `ConnectionDropped`), `UpstreamTimeout` (`ConnectTimeout`).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools

from gateway.config.resilience import Timeouts, timeouts
from gateway.config.routes import HOST_CLIENT, HOST_UPSTREAM, Upstream
from gateway.errors import (
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)

_HIGH_WATER = 256 * 1024  # buffered response bytes before reading from the socket pauses
_CRLF = b"\r\n"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SLOW_HEAD = "the upstream did not answer in time"
_SLOW_BODY = "the upstream stopped sending its response"
_PAST_DEADLINE = "the request's deadline passed"


class _StopParsing(Exception):
    """Raised in a parser callback to stop parsing (httptools wraps it in its own error)."""


class BodySourceError(Exception):
    """Reading the client's request body failed; the upstream request was abandoned."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self._writable: asyncio.Future[None] | None = None
        self._reset(False)

    def _reset(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only  # HEAD: the response has no body whatever it says
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.extra = False  # bytes past the response: the connection is discarded
        self.got_bytes = False
        self.error: Exception | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.complete:
            self._discard()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # also what a callback below raised
            if self.extra:
                self._discard()
            else:
                if self.error is None:
                    self.error = UpstreamUnavailable(f"invalid response from the upstream: {exc}")
                self._abort()
        self._wake()

    def _discard(self) -> None:
        """Bytes past the one response asked for: the response stands as it was parsed, the
        connection is never reused, and nothing of the extra bytes reaches anyone."""
        self.keep_alive = False
        self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and not _has_length(self.headers):
                self.complete = True  # read-until-close framing (RFC 9112 6.3, rule 8)
            else:
                self.error = ConnectionDropped("the upstream closed the connection")
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:  # a second response after the final one: never parsed, never merged
            self.extra = True
            raise _StopParsing
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:  # ... with no header field at all
            self.extra = True
            raise _StopParsing
        status = self.parser.get_status_code()
        if status == 101 or not 100 <= status <= 599:  # no upgrade was asked for
            self.error = UpstreamUnavailable(f"the upstream answered with status {status}")
            raise _StopParsing
        if status < 200:
            self.headers = []  # interim response (e.g. 103): not forwarded
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once complete
        if self.head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status:  # the final response, not an interim 1xx one
            self.complete = True

    # used by Exchange
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait(self, seconds: float, deadline: float, why: str) -> None:
        """Until the next event on this connection; abort it after `seconds`, or at the
        loop time `deadline` when that comes first."""
        left = deadline - self.loop.time()
        if left < seconds:
            seconds, why = left, _PAST_DEADLINE
        waiter = self.waiter = self.loop.create_future()
        # A bare timer is several times cheaper than asyncio.timeout() on this hot path
        # (and call_later than call_at, which goes through it in uvloop).
        timer = self.loop.call_later(seconds, self._time_out, waiter, why)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _time_out(self, waiter: asyncio.Future[None], why: str) -> None:
        if not waiter.done():
            self._abort()
            waiter.set_exception(UpstreamTimeout(why))

    async def drain(self, deadline: float) -> None:
        if self._writable is not None:
            # Rare (the upstream reads slower than the client sends): asyncio.timeout is fine.
            try:
                async with asyncio.timeout_at(deadline):
                    await self._writable
            except TimeoutError:
                self._abort()
                raise UpstreamTimeout(_PAST_DEADLINE) from None
        if self.closed:
            raise ConnectionDropped("the upstream closed the connection")

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self.chunks
            and self.keep_alive
        )


class Response:
    """An upstream response whose body is read chunk by chunk; release() when done."""

    def __init__(self, pool: Pool, conn: _Connection, idle: float, deadline: float) -> None:
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
        # side, and the buffer is bounded (_HIGH_WATER), so a wait comes soon enough.
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
        if conn.paused and conn.buffered < _HIGH_WATER // 4 and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()
        return chunk

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
        self._idle: list[_Connection] = []
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
            conn._reset(method == "HEAD")
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
        conn: _Connection,
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
            conn._abort()  # the upstream must never see a truncated body as complete
            raise BodySourceError(str(exc)) from exc
        if chunked:
            transport.write(b"0\r\n\r\n")
        elif sent != content_length:
            conn._abort()
            raise BodySourceError("the request body was shorter than its Content-Length")

    async def _acquire(self, limits: Timeouts, deadline: float) -> _Connection:
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

    async def _connect(self, until: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(until):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self.tls
                )
        except TimeoutError:
            raise ConnectTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream: {exc}") from exc
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.reusable and not self.closing:
            self._idle.append(conn)
        else:
            if not conn.closed:
                conn._abort()
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
            conn._abort()
        self._count -= len(self._idle)
        self._idle.clear()


def _tls_context(upstream: Upstream) -> ssl.SSLContext:
    """Verify the upstream (its CA bundle, else the system's; hostname checked) and, for
    mTLS, present the gateway's client certificate."""
    context = ssl.create_default_context(cafile=upstream.ca)
    if upstream.client_cert is not None:
        context.load_cert_chain(upstream.client_cert, upstream.client_key)
    return context


def _has_length(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            return True
    return False
