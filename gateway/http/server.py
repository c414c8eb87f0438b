"""The server layer: uvicorn's httptools protocol with the edge's rules, and its config.

uvicorn parses requests with httptools (llhttp, Node's parser), which rejects most malformed
framing (a bad chunk size, Content-Length with Transfer-Encoding, two Content-Lengths,
folded or invalid header lines). What it leaves to the server, uvicorn does not do, so
`EdgeProtocol` adds it as a subclass that overrides the parser callbacks (and, in `_start`,
starts the request cycle as uvicorn does, with the cycle of gateway/http/cycle.py, which
answers failures in JSON and writes a small answer's head and body in one write):

- limits (gateway/config/edge.py): request target 414, header bytes and count 431, a header
  timeout 408, an idle timeout for connections that never send a request, a body timeout
  408 between two reads of a body, a cap on open connections with headroom for
  `/_strangler/` (an idle keep-alive connection is closed first to make room, as nginx does);
- strictness: HTTP/0.9 400, versions other than 1.0 and 1.1 505, a missing (HTTP/1.1),
  duplicate or malformed `Host` 400, an absolute-form target's authority replaces `Host`
  (RFC 9112 3.2.2), `CONNECT` 405, transfer codings other than `chunked` 501, upgrades
  other than WebSocket (h2c, anything else) 501, a `Connection` header naming a framing,
  routing or identity header 400 (gateway/request/headers.py);
- a WebSocket upgrade goes to the application like any request, with `TUNNEL` in its
  `scope["extensions"]`, which sends the upstream's 101 and hands the connection over
  (gateway/http/websocket.py); a refused upgrade is answered and the connection closed;
- trailer fields of a chunked request are dropped: uvicorn would append them to the header
  list the application already holds (`scope["headers"]`), so a trailer `Host:` would reach
  the upstream as a header. The body's bytes are forwarded, its trailers are not;
- every error is the gateway's JSON (gateway/base/errors.py), uvicorn's plain-text 400 and 500
  included; after one, the connection closes. A request that goes wrong while the one before
  it on the same connection is still being answered closes the connection after that answer.
"""

from __future__ import annotations

import asyncio
import re
import resource
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.base.errors import (
    BadRequest,
    GatewayError,
    HeadersTooLarge,
    MethodNotAllowed,
    NotImplementedByGateway,
    RequestTimeout,
    TargetTooLong,
    TooManyConnections,
    VersionNotSupported,
    error_response,
)
from gateway.config.edge import EdgeSettings
from gateway.http.cycle import CYCLE_LOG, JsonCycle
from gateway.http.websocket import TUNNEL
from gateway.observe.admin import ADMIN_PREFIX
from gateway.request import headers as header_rules

# RFC 9110 7.2 / RFC 3986 3.2.2: a reg-name or IPv4 address, or an IP literal, then a port.
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_ADMIN = ADMIN_PREFIX.encode("ascii")
_NONE, _IDLE, _HEAD, _BODY = 0, 1, 2, 3  # what a connection's timer waits for
_HEADER_OVERHEAD = 4  # ": " and CRLF per field line


class _Reject(Exception):
    """Raised in a parser callback to stop parsing; `error` is the answer."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.detail)
        self.error = error


class EdgeProtocol(HttpToolsProtocol):
    """One client connection. `settings` gives the live table's `edge:` section."""

    settings: Callable[[], EdgeSettings]
    descriptors: int  # the most connections the process's descriptor limit allows

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge = self.settings()
        self._cap = min(self.edge.max_connections, self.descriptors)  # client connections
        self._phase = _IDLE
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when the timer fires
        self._head_bytes = 0  # read since the request began, while its head is incomplete
        self._chunk = 0  # the size of the read being parsed
        self._closing = False
        self._upgrade = False  # a WebSocket upgrade is with the application
        self._valid_host: bytes | None = None  # the last Host that passed the check
        self._early = b""  # bytes the client sent past its upgrade request

    # -- connections -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._cap:
            self._evict_idle()
        if len(self.connections) > self._cap + self.edge.admin_headroom:
            self._closing = True
            transport.abort()  # nothing read, nothing to answer
            return
        self._wait(_IDLE, self.edge.idle_timeout)

    def _evict_idle(self) -> None:
        """Close a connection that waits for a request (rare: only at the cap, so a scan)."""
        for conn in self.connections:
            if conn is not self and isinstance(conn, EdgeProtocol) and conn.idle:
                conn.transport.close()
                return

    @property
    def idle(self) -> bool:
        """Waiting for a request: nothing read of one, no answer under way."""
        cycle = self.cycle
        return self._phase in (_IDLE, _NONE) and (cycle is None or cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # -- the timer: one per connection, re-armed only when it fires early ----------------------
    def _wait(self, phase: int, seconds: float) -> None:
        """Wait for `phase` to end; a later deadline only moves a number (most requests end
        their head and body long before any timer fires), an earlier one re-arms."""
        self._phase = phase
        self._deadline = self.loop.time() + seconds
        if self._timer is None or self._deadline < self._armed:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = self._deadline
        self._timer = self.loop.call_at(self._deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._phase == _NONE or self.transport.is_closing():
            return
        if self._phase == _BODY and self.flow.read_paused:
            # the application is not reading: not the client's delay
            self._deadline = self.loop.time() + self.edge.body_timeout
        if self.loop.time() < self._deadline:
            self._arm()
        elif self._phase == _IDLE:
            self.transport.close()
        elif self._phase == _HEAD:
            self._reject(RequestTimeout("the request's headers were not sent in time"))
        else:
            self._reject(RequestTimeout("the request body was not sent in time"))

    # -- parsing -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # let through: a WebSocket upgrade
            # The request has gone to the application, which answers it or takes the
            # connection over (`_take_over`); nothing is read meanwhile, the rest kept.
            self._closing = True
            self.flow.pause_reading()
            self._early = data[upgrade.args[0] :]
            return
        except httptools.HttpParserError as exc:
            reject = exc.__context__ if isinstance(exc.__context__, _Reject) else None
            self._reject(reject.error if reject else BadRequest(f"malformed request: {exc}"))
            return
        if self._phase == _HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.edge.max_header_bytes:
                self._reject(_too_large(self.edge) if self.headers else _too_long(self.edge))

    def on_message_begin(self) -> None:
        # uvicorn's, inlined (this runs on every request)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {  # type: ignore[typeddict-item]  # completed in _start
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        self._head_bytes = 0
        # _wait(_HEAD, header_timeout), inlined
        self._phase = _HEAD
        self._deadline = deadline = self.loop.time() + self.edge.header_timeout
        if self._timer is None or deadline < self._armed:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.edge.max_request_line:
            raise _Reject(_too_long(self.edge))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._phase != _HEAD:
            return  # a trailer field of a chunked body: dropped, never a header
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace (RFC 9110 5.5)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        if len(self.headers) > self.edge.max_headers:
            raise _Reject(HeadersTooLarge(f"more than {self.edge.max_headers} header fields"))

    def on_headers_complete(self) -> None:
        edge = self.edge
        if (
            self._head_bytes + self._chunk > edge.max_header_bytes
            and _head_size(self.url, self.headers) > edge.max_header_bytes
        ):
            raise _Reject(_too_large(edge))
        version, method = self._check_head()
        if len(self.connections) > self._cap and not self.url.startswith(_ADMIN):
            raise _Reject(TooManyConnections("the gateway has too many connections", 1))
        # _wait(_BODY, body_timeout), inlined; the timer is armed since the head began
        self._phase = _BODY
        self._deadline = deadline = self.loop.time() + edge.body_timeout
        if deadline < self._armed:
            self._arm()
        self._start(version, method)

    def _start(self, version: str, method: bytes) -> None:
        """uvicorn's own start of a request cycle (its on_headers_complete, less what the
        checks above decided), with the cycle that answers failures in JSON: made here, not
        swapped in later, which would make every attribute lookup on it slower."""
        scope = self.scope
        scope["method"] = method.decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        if self._upgrade:  # the application decides, and may take the connection over
            scope["extensions"] = {TUNNEL: {"take_over": self._take_over}}
        parsed = httptools.parse_url(self.url)
        raw_path = parsed.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        previous = self.cycle
        self.cycle = JsonCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=CYCLE_LOG,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            # a refused upgrade closes the connection after its answer
            keep_alive=version != "1.0" and self.parser.should_keep_alive() and not self._upgrade,
            on_response=self.on_response_complete,
        )
        if previous is None or previous.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined: queued behind the request being answered
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def _check_head(self) -> tuple[str, bytes]:
        """The request head's own rules, before the application sees it (one pass over the
        headers: this runs on every request); its HTTP version and method."""
        version = self.parser.get_http_version()
        if version == "0.9":
            raise _Reject(BadRequest("HTTP/0.9 requests are not served"))
        if version not in ("1.1", "1.0"):
            raise _Reject(VersionNotSupported(f"HTTP/{version} is not served"))
        method = self.parser.get_method()
        if method == b"CONNECT":
            raise _Reject(MethodNotAllowed("CONNECT: the gateway is not a forward proxy"))
        host: bytes | None = None
        hosts = 0
        upgrade = connection = False
        for name, value in self.headers:
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"transfer-encoding" and value.lower() != b"chunked":
                raise _Reject(NotImplementedByGateway(f"transfer coding {value!r}"))
            elif name == b"connection":
                connection = True
            elif name == b"upgrade":
                upgrade = value.lower() == b"websocket"
        if self.parser.should_upgrade():
            if not upgrade or method != b"GET" or version != "1.1":
                raise _Reject(NotImplementedByGateway("only WebSocket upgrades are proxied"))
            self._upgrade = True
        if connection:
            nominated = header_rules.protected_nomination(self.headers)
            if nominated is not None:
                raise _Reject(BadRequest(f"Connection names {nominated.decode('latin-1')!r}"))
        if not self.url.startswith(b"/"):
            host, hosts = self._absolute_form(), 1
        if hosts > 1:
            raise _Reject(BadRequest("more than one Host header"))
        if host is None:
            if version == "1.1":
                raise _Reject(BadRequest("an HTTP/1.1 request needs a Host header"))
        elif host != self._valid_host:  # a client sends the same Host again and again
            if not _HOST.fullmatch(host):
                raise _Reject(BadRequest("malformed Host header"))
            self._valid_host = host
        return version, method

    def _absolute_form(self) -> bytes:
        """RFC 9112 3.2.2: the target's authority is the Host; a Host header is ignored."""
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise _Reject(BadRequest("malformed request target")) from None
        if parsed.schema not in (b"http", b"https") or not parsed.host:
            raise _Reject(BadRequest("the request target must be a path or an http(s) URL"))
        authority = parsed.host + (b":%d" % parsed.port if parsed.port else b"")
        self.headers[:] = [(n, v) for n, v in self.headers if n != b"host"]
        self.headers.append((b"host", authority))
        return authority

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.edge.body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle  # uvicorn's, inlined (this runs on every request)
        if cycle.response_complete:  # answered before its body ended: the next request's wait
            self._wait(_IDLE, self.edge.idle_timeout)
        else:
            self._phase = _NONE  # the application has the request: the upstream's timeouts apply
            cycle.more_body = False
            cycle.message_event.set()

    def on_response_complete(self) -> None:
        """uvicorn's, with the wait for the next request on the connection's own timer (a
        number moved) instead of a timer armed and cancelled per request."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._phase == _NONE:  # else a request is being read, under its own timeout
            self._wait(_IDLE, self.edge.idle_timeout)

    def _take_over(self, head: bytes) -> tuple[asyncio.Transport, bytes]:
        """Send the 101 `head` and hand the connection over (gateway/http/websocket.py): this
        protocol, and uvicorn's request cycle, are done with it."""
        cycle = self.cycle
        cycle.response_started = cycle.response_complete = True  # the tunnel is the answer
        self.transport.write(head)
        self.connections.discard(self)  # the tunnel's owner closes it at shutdown
        self._phase = _NONE
        if self._timer is not None:
            self._timer.cancel()
        return self.transport, self._early

    # -- answers made here ---------------------------------------------------------------------
    def _reject(self, error: GatewayError) -> None:
        self._closing = True
        self.flow.pause_reading()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._write_error(error)
        elif self._phase != _BODY:
            # the request before this one is still being answered: that answer goes out
            # whole, then the connection closes; this one gets none
            cycle.keep_alive = False
        elif cycle.response_started:
            self.transport.close()  # the body went wrong after the answer began: cut it short
        else:
            # the request's own body went wrong (too slow, malformed): the application's
            # receive() says the client is gone, its send() does nothing, the client gets this
            cycle.disconnected = True
            cycle.message_event.set()
            self._write_error(error)

    def _write_error(self, error: GatewayError) -> None:
        self._closing = True
        self._phase = _NONE
        request_id = header_rules.request_id(self.headers or [])
        self.transport.write(error_response(error, request_id))
        self.transport.close()


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    return len(url) + sum(len(n) + len(v) + _HEADER_OVERHEAD for n, v in headers)


def _too_long(edge: EdgeSettings) -> TargetTooLong:
    return TargetTooLong(f"the request target is longer than {edge.max_request_line} bytes")


def _too_large(edge: EdgeSettings) -> HeadersTooLarge:
    return HeadersTooLarge(f"the request head is larger than {edge.max_header_bytes} bytes")


def descriptor_budget() -> int:
    """Client connections the descriptor limit leaves room for: the soft limit is raised to
    the hard one, and half of it is kept for upstream connections, files and sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have
    return soft // 2


def protocol(settings: Callable[[], EdgeSettings]) -> type[EdgeProtocol]:
    """The protocol class for one server, reading its limits from `settings` per connection."""
    attrs = {"settings": staticmethod(settings), "descriptors": descriptor_budget()}
    return type("EdgeProtocol", (EdgeProtocol,), attrs)


def config(app: Any, settings: Callable[[], EdgeSettings], **options: Any) -> uvicorn.Config:
    """uvicorn's config for the gateway; `options` are uvicorn's (host, port, ssl_*, loop)."""
    return uvicorn.Config(
        app,
        http=protocol(settings),
        ws="none",  # upgrades are refused by EdgeProtocol
        lifespan="on",
        access_log=False,  # the gateway writes its own structured line
        proxy_headers=False,  # the gateway decides which forwarded headers to trust
        server_header=False,  # the upstream's Server and Date headers pass through
        date_header=False,
        **options,
    )
