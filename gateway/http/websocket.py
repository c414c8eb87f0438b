"""WebSocket proxying: the upgrade is decided like any request, then the connections are spliced.

A WebSocket upgrade on a route with `websocket:` (gateway/config/websocket.py) goes through
the same path normalisation, authentication, policy, limits and route choice (a canary's
sticky assignment included) as any request; the gateway then sends the upgrade to the chosen
upstream on a connection of its own. A `101` from the upstream goes to the client and the
two connections become a tunnel, as nginx proxies WebSockets: bytes are passed on as they
arrive, both ways, without waiting for whole messages, so close codes, pings and
subprotocols are the two ends' business. The tunnel reads frame headers as they pass
(`Meter`) to enforce the route's `max_message` (close code 1009) and counts messages; a
tunnel idle for `idle_timeout` is closed (1001). Any other answer of the upstream goes to the
client as a normal response. WebSocket traffic is never mirrored by shadow.

The edge (gateway/http/server.py) lets WebSocket upgrades through and puts `TUNNEL` in the
request's `scope["extensions"]`, with `take_over`: a function that sends the 101 head to the
client and hands over its connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httptools
from prometheus_client.metrics_core import Metric

from gateway.base.errors import (
    ConnectFailed,
    ConnectionDropped,
    ConnectTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.config.routes import Route, Upstream
from gateway.config.websocket import WebSocketSettings
from gateway.observe.metrics import counter, gauge
from gateway.request.headers import Headers

# scope["extensions"][TUNNEL]["take_over"]: (101 head) -> (the client's transport, early bytes)
TUNNEL = "strangler.tunnel"
TakeOver = Callable[[bytes], tuple[asyncio.Transport, bytes]]

CLOSED, IDLE, TOO_BIG, SHUTDOWN = "closed", "idle", "too_big", "shutdown"
_CLOSE_CODES = {IDLE: 1001, TOO_BIG: 1009, SHUTDOWN: 1001}  # RFC 6455 7.4.1
_MAX_REFUSAL = 64 * 1024  # the body of a refused upgrade the gateway passes on


@dataclass
class WebSocketStats:
    """Per route, read at scrape time."""

    upgrades: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, outcome)
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, direction)
    closed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (route, reason)
    open: Counter[str] = field(default_factory=Counter)


class Meter:
    """Follows one direction's frames (RFC 6455 5.2) without keeping their payloads: the size
    of the message in progress, and how many messages passed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages = 0
        self._head = bytearray()  # a frame header not yet whole (2 to 14 bytes)
        self._skip = 0  # payload bytes of the current frame still to pass
        self._size = 0  # the data message in progress, so far

    def feed(self, data: bytes) -> bool:
        """Follow `data`; False when a message grew past the limit."""
        at, end = 0, len(data)
        while at < end:
            if self._skip:
                step = min(self._skip, end - at)
                self._skip -= step
                at += step
                continue
            self._head.append(data[at])
            at += 1
            if len(self._head) >= 2 and len(self._head) == _header_size(self._head):
                if not self._frame(self._head):
                    return False
                self._head.clear()
        return True

    def _frame(self, head: bytearray) -> bool:
        fin, opcode, short = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
        length = short if short < 126 else int.from_bytes(head[2 : 4 if short == 126 else 10])
        if opcode < 8:  # continuation, text, binary: a data message (control frames aside)
            self._size += length
            if self._size > self.limit:
                return False
            if fin:
                self.messages += 1
                self._size = 0
        self._skip = length
        return True


def _header_size(head: bytearray) -> int:
    short = head[1] & 0x7F
    extended = 2 if short == 126 else 8 if short == 127 else 0
    return 2 + extended + (4 if head[1] & 0x80 else 0)


class _Side(asyncio.Protocol):
    """One end of a tunnel: what it receives goes to the other end, with back-pressure."""

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, limit: int) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.meter = Meter(limit)
        self.other: _Side | None = None

    def data_received(self, data: bytes) -> None:
        self.tunnel.last = self.tunnel.loop.time()
        if not self.meter.feed(data):
            self.tunnel.close(TOO_BIG)
        elif self.other is not None:
            self.other.transport.write(data)

    def eof_received(self) -> bool:
        self.tunnel.close(CLOSED)  # each end closes after the close handshake
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close(CLOSED)

    def pause_writing(self) -> None:
        if self.other is not None:
            self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.other is not None:
            self.other.transport.resume_reading()


class Tunnel:
    """A client and an upstream connection spliced, until either closes."""

    def __init__(self, route: str, settings: WebSocketSettings, stats: WebSocketStats) -> None:
        self.route = route
        self.settings = settings
        self.stats = stats
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.done: asyncio.Future[str] = self.loop.create_future()
        self.client: _Side | None = None
        self.upstream: _Side | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(
        self, client: asyncio.Transport, upstream: asyncio.Transport, early: tuple[bytes, bytes]
    ) -> None:
        """`early`: bytes each end sent past its handshake, before the splice."""
        limit = self.settings.max_message
        self.client = _Side(self, client, limit)
        self.upstream = _Side(self, upstream, limit)
        self.client.other, self.upstream.other = self.upstream, self.client
        for side, data in zip((self.client, self.upstream), early, strict=True):
            side.transport.set_protocol(side)
            if data:
                side.data_received(data)
            side.transport.resume_reading()  # paused when each end's handshake was read
        self._timer = self.loop.call_at(self.last + self.settings.idle_timeout, self._idle)

    def _idle(self) -> None:
        due = self.last + self.settings.idle_timeout
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._idle)
        else:
            self.close(IDLE)

    def close(self, reason: str) -> None:
        if self.done.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        code = _CLOSE_CODES.get(reason)  # None: an end closed, the other follows it
        if self.client is not None:
            if code is not None:
                self.client.transport.write(b"\x88\x02" + code.to_bytes(2))  # a server's close
            self.client.transport.close()  # after what is buffered
        if self.upstream is not None:
            if code is not None:
                self.upstream.transport.abort()  # a client's frames are masked: just end it
            else:
                self.upstream.transport.close()
        self.done.set_result(reason)


class _Handshake(asyncio.Protocol):
    """The upstream's answer to the upgrade: its head and, for a 101, the bytes after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, Headers, bytes]] = loop.create_future()
        self.headers: Headers = []
        self.body = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # a 101: what follows is the tunnel's
            assert self.transport is not None
            self.transport.pause_reading()  # until the tunnel takes over
            self._answer(bytes(data[upgrade.args[0] :]))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnavailable(f"invalid answer to the upgrade: {exc}"))
        if len(self.body) > _MAX_REFUSAL:
            self._fail(UpstreamUnavailable("the upstream's refusal of the upgrade is too large"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() != 101:
            self._answer(bytes(self.body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionDropped("the upstream closed the connection during the upgrade"))

    def _answer(self, rest: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result((self.parser.get_status_code(), self.headers, rest))

    def _fail(self, error: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


@dataclass
class Upgrade:
    """What the request path hands over for one WebSocket upgrade."""

    route: Route
    upstream: Upstream
    head: bytes  # the upgrade request as the upstream gets it (gateway.request.client's head)
    tls: ssl.SSLContext | None


class WebSockets:
    """Every tunnel of the gateway, and their stats."""

    def __init__(self) -> None:
        self.stats = WebSocketStats()
        self._open: set[Tunnel] = set()

    async def connect(self, upgrade: Upgrade) -> tuple[asyncio.Transport, int, Headers, bytes]:
        """Send the upgrade upstream: (its connection, status, headers, the rest: the body of
        a refusal, or the first tunnel bytes of a 101). Raises the gateway's upstream errors."""
        upstream = upgrade.upstream
        _, host, port = upstream.origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(upstream.connect_timeout):
                transport, handshake = await loop.create_connection(
                    lambda: _Handshake(loop), host, port, ssl=upgrade.tls
                )
        except TimeoutError:
            raise ConnectTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream: {exc}") from exc
        transport.write(upgrade.head)
        try:
            async with asyncio.timeout(upstream.timeout):
                status, headers, rest = await handshake.answer
        except TimeoutError:
            transport.abort()
            raise UpstreamTimeout("the upstream did not answer the upgrade in time") from None
        except BaseException:
            transport.abort()
            raise
        if status != 101:
            transport.close()
        self.stats.upgrades[upgrade.route.name, "tunnelled" if status == 101 else "refused"] += 1
        return transport, status, headers, rest

    async def tunnel(
        self,
        route: Route,
        client: tuple[asyncio.Transport, bytes],
        upstream: tuple[asyncio.Transport, bytes],
    ) -> str:
        """Splice the two until either ends; the reason it ended."""
        assert route.websocket is not None
        tunnel = Tunnel(route.name, route.websocket, self.stats)
        tunnel.start(client[0], upstream[0], (client[1], upstream[1]))
        self._open.add(tunnel)
        self.stats.open[route.name] += 1
        try:
            reason = await tunnel.done
        except asyncio.CancelledError:
            tunnel.close(SHUTDOWN)
            raise
        finally:
            self._open.discard(tunnel)
            self.stats.open[route.name] -= 1
        self.stats.closed[route.name, reason] += 1
        for direction, side in (("client", tunnel.client), ("upstream", tunnel.upstream)):
            if side is not None:
                self.stats.messages[route.name, direction] += side.meter.messages
        return reason

    def close(self) -> None:
        """Shutdown: every tunnel ends with 1001 (going away)."""
        for tunnel in list(self._open):
            tunnel.close(SHUTDOWN)


def websocket_metrics(stats: WebSocketStats) -> Iterator[Metric]:
    yield counter(
        "strangler_websocket_upgrades_total",
        "WebSocket upgrades sent upstream: tunnelled (101) or refused by the upstream.",
        ["route", "outcome"],
        ((key, n) for key, n in stats.upgrades.items()),
    )
    yield gauge(
        "strangler_websocket_open",
        "WebSocket tunnels open now.",
        ["route"],
        (((route,), n) for route, n in stats.open.items()),
    )
    yield counter(
        "strangler_websocket_messages_total",
        "Messages of closed tunnels, by the side that sent them.",
        ["route", "direction"],
        ((key, n) for key, n in stats.messages.items()),
    )
    yield counter(
        "strangler_websocket_closed_total",
        "Tunnels ended: closed by an end, idle, a message too big, or the gateway's shutdown.",
        ["route", "reason"],
        ((key, n) for key, n in stats.closed.items()),
    )
