"""The request side, case by case, each sent in one write and split across many writes.

A case is the client's bytes, the statuses the client must get (one per request, in order)
and what each upstream must have received: (upstream, method, target, body) per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.support.wire import Answer, Received, Stack, check_gateway_error, exchange

pytestmark = pytest.mark.anyio

H = b"Host: gateway.test\r\n"
CLOSE = b"Connection: close\r\n"
SMUGGLED = b"DELETE /secret HTTP/1.1\r\nHost: x\r\nX-User-Roles: admin\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Case:
    name: str
    data: bytes
    statuses: list[int]
    forwarded: list[tuple[str, str, str, bytes]] = field(default_factory=list)
    error: str | None = None  # the `error` code of a gateway-made answer
    host: str | None = "gateway.test"  # the Host the upstreams get (None: their own)
    check: Callable[[list[Received]], None] | None = None


def req(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(headers) + b"\r\n" + body


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


def _no_trailer_fields(requests: list[Received]) -> None:
    (request,) = requests
    assert request.header("host") != ["evil.test"]
    assert request.header("x-trailer") == [] and request.header("x-user-roles") == []


def _custom_dropped(requests: list[Received]) -> None:
    (request,) = requests
    assert request.header("x-custom") == [] and request.header("x-kept") == ["1"]


def _no_client_identity(requests: list[Received]) -> None:
    (request,) = requests
    names = {name for name, _ in request.headers}
    assert not {n for n in names if n.startswith(("x-user-", "x-strangler-"))}
    assert request.header("x-forwarded-for") == ["127.0.0.1"]


def _absolute_host(requests: list[Received]) -> None:
    (request,) = requests
    assert request.header("x-forwarded-host") == ["other.test:8080"]


CASES = [
    Case("plain GET", req(b"GET /x?q=1 HTTP/1.1", H, CLOSE), [200], [("a", "GET", "/x?q=1", b"")]),
    Case(
        "POST with Content-Length",
        req(b"POST /b/items HTTP/1.1", H, CLOSE, b"Content-Length: 5\r\n", body=b"hello"),
        [200],
        [("b", "POST", "/b/items", b"hello")],
    ),
    Case(
        "chunked POST, forwarded with its length",
        req(b"POST /x HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n")
        + chunked(b"abc", b"defgh"),
        [200],
        [("a", "POST", "/x", b"abcdefgh")],
    ),
    Case(
        "chunked trailers never become headers",
        req(b"POST /x HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n")
        + chunked(b"abc", trailer=b"Host: evil.test\r\nX-Trailer: 1\r\nX-User-Roles: admin\r\n"),
        [200],
        [("a", "POST", "/x", b"abc")],
        check=_no_trailer_fields,
    ),
    Case(
        "Connection: content-length smuggles a request",
        req(
            b"GET /x HTTP/1.1",
            H,
            b"Connection: content-length\r\n",
            b"Content-Length: %d\r\n" % len(SMUGGLED),
            body=SMUGGLED,
        ),
        [400],
        error="bad_request",
    ),
    Case(
        "Connection: transfer-encoding",
        req(
            b"POST /x HTTP/1.1",
            H,
            b"Connection: close, Transfer-Encoding\r\n",
            b"Transfer-Encoding: chunked\r\n",
            body=chunked(SMUGGLED),
        ),
        [400],
        error="bad_request",
    ),
    Case("Connection: host", req(b"GET /x HTTP/1.1", H, b"Connection: host\r\n"), [400]),
    Case(
        "Connection: x-forwarded-for",
        req(b"GET /x HTTP/1.1", H, b"Connection: X-Forwarded-For\r\n"),
        [400],
    ),
    Case(
        "Connection: authorization",
        req(b"GET /secret HTTP/1.1", H, b"Connection: authorization\r\n"),
        [400],
    ),
    Case(
        "Connection naming a plain header drops it",
        req(
            b"GET /x HTTP/1.1",
            H,
            b"Connection: close, X-Custom\r\n",
            b"X-Custom: 1\r\n",
            b"X-Kept: 1\r\n",
        ),
        [200],
        [("a", "GET", "/x", b"")],
        check=_custom_dropped,
    ),
    Case(
        "identity and gateway headers from a client are stripped",
        req(
            b"GET /x HTTP/1.1",
            H,
            CLOSE,
            b"X-User-Id: root\r\nX-User-Roles: admin\r\nX-Strangler-Upstream: b\r\n",
            b"X-Forwarded-For: 10.9.9.9\r\n",
        ),
        [200],
        [("a", "GET", "/x", b"")],
        check=_no_client_identity,
    ),
    Case(
        "Content-Length with Transfer-Encoding",
        req(b"POST /x HTTP/1.1", H, b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
        + chunked(b"abc"),
        [400],
    ),
    Case(
        "two Content-Lengths",
        req(b"POST /x HTTP/1.1", H, b"Content-Length: 3\r\nContent-Length: 4\r\n", body=b"abcd"),
        [400],
    ),
    Case(
        "a transfer coding other than chunked",
        req(b"POST /x HTTP/1.1", H, b"Transfer-Encoding: gzip, chunked\r\n") + chunked(b"ab"),
        [501],
        error="not_implemented",
    ),
    Case(
        "gzip alone",
        req(b"POST /x HTTP/1.1", H, b"Transfer-Encoding: gzip\r\n", body=b"abc"),
        [501],
    ),
    Case("two Host headers", req(b"GET /x HTTP/1.1", H, b"Host: other.test\r\n"), [400]),
    Case("no Host in HTTP/1.1", req(b"GET /x HTTP/1.1", CLOSE), [400]),
    Case("a malformed Host", req(b"GET /x HTTP/1.1", b"Host: a/b@c\r\n"), [400]),
    Case(
        "HTTP/1.0 without Host",
        req(b"GET /x HTTP/1.0"),
        [200],
        [("a", "GET", "/x", b"")],
        host=None,
    ),
    Case("HTTP/0.9", b"GET /x\r\n\r\n", [400]),
    Case("HTTP/2.0 in a request line", req(b"GET /x HTTP/2.0", H), [505]),
    Case("a bare LF", b"GET /x HTTP/1.1\nHost: g\n\n", [400]),
    Case("a folded header", req(b"GET /x HTTP/1.1", H, b"X-A: 1\r\n  folded\r\n"), [400]),
    Case("a space before the colon", req(b"GET /x HTTP/1.1", b"Host : g\r\n"), [400]),
    Case("a NUL in a header", req(b"GET /x HTTP/1.1", H, b"X-A: a\x00b\r\n"), [400]),
    Case(
        "a bad chunk size",
        req(b"POST /x HTTP/1.1", H, b"Transfer-Encoding: chunked\r\n") + b"zz\r\nabc\r\n0\r\n\r\n",
        [400],
    ),
    Case(
        "absolute-form target: its authority is the Host",
        req(b"GET http://other.test:8080/x?y=1 HTTP/1.1", H, CLOSE),
        [200],
        [("a", "GET", "/x?y=1", b"")],
        check=_absolute_host,
        host="other.test:8080",
    ),
    Case("absolute-form with another scheme", req(b"GET ftp://h/x HTTP/1.1", H), [400]),
    Case("CONNECT", req(b"CONNECT example.test:443 HTTP/1.1", H), [405]),
    Case(
        "CONNECT with a body",
        req(b"CONNECT example.test:443 HTTP/1.1", H, b"Content-Length: 3\r\n", body=b"abc"),
        [405],
        error="method_not_allowed",
    ),
    Case(
        "a WebSocket upgrade",
        req(
            b"GET /x HTTP/1.1",
            H,
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
        [501],
    ),
    Case(
        "an h2c upgrade",
        req(
            b"GET /x HTTP/1.1",
            H,
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n",
            b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
        ),
        [501],
    ),
    Case("a target too long", req(b"GET /" + b"a" * 9000 + b" HTTP/1.1", H), [414]),
    Case(
        "a header section too large",
        req(b"GET /x HTTP/1.1", H, b"X-Big: " + b"b" * 70_000 + b"\r\n"),
        [431],
        error="headers_too_large",
    ),
    Case(
        "too many header fields",
        req(b"GET /x HTTP/1.1", H, *(b"X-H%d: 1\r\n" % i for i in range(120))),
        [431],
    ),
    Case(
        "two requests pipelined",
        req(b"GET /x/1 HTTP/1.1", H)
        + req(b"POST /b/2 HTTP/1.1", H, CLOSE, b"Content-Length: 2\r\n")
        + b"ok",
        [200, 200],
        [("a", "GET", "/x/1", b""), ("b", "POST", "/b/2", b"ok")],
    ),
    Case(
        "a good request, then a bad one, pipelined",
        req(b"GET /x/1 HTTP/1.1", H)
        + req(b"GET /x/2 HTTP/1.1", H, b"Connection: content-length\r\n"),
        [200],
        [("a", "GET", "/x/1", b"")],
    ),
    Case(
        "Expect: 100-continue",
        req(
            b"PUT /x HTTP/1.1",
            H,
            CLOSE,
            b"Expect: 100-continue\r\nContent-Length: 2\r\n",
            body=b"hi",
        ),
        [100, 200],
        [("a", "PUT", "/x", b"hi")],
    ),
    Case(
        "a body-less POST is framed with Content-Length: 0",
        req(b"POST /x HTTP/1.1", H, CLOSE),
        [200],
        [("a", "POST", "/x", b"")],
        check=lambda rs: (rs[0].header("content-length") == ["0"]) or pytest.fail(str(rs)),
    ),
    Case("a token required, none sent", req(b"GET /secret HTTP/1.1", H, CLOSE), [401]),
]


def _check(stack: Stack, case: Case, answers: list[Answer]) -> None:
    assert [a.status for a in answers] == case.statuses, [(a.status, a.body) for a in answers]
    for answer in answers:
        if answer.status >= 400:
            check_gateway_error(answer, answer.status, case.error)
    received = [("a", r) for r in stack.a.requests] + [("b", r) for r in stack.b.requests]
    got = sorted((name, r.method, r.target, r.body) for name, r in received)
    assert got == sorted(case.forwarded)
    stack.check_upstreams()
    for upstream in (stack.a, stack.b):
        for request in upstream.requests:
            # the client's Host is passed on (the default), one, as the gateway decided it
            assert request.header("host") == [case.host or f"127.0.0.1:{upstream.port}"]
    if case.check is not None:
        case.check([r for _, r in received])


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "many-writes"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_request_case(stack: Stack, case: Case, split: bool) -> None:
    answers = await exchange(stack.gateway.port, case.data, split)
    _check(stack, case, answers)
    # the gateway still serves a normal request afterwards
    after = await exchange(stack.gateway.port, req(b"GET /after HTTP/1.1", H, CLOSE))
    assert [a.status for a in after] == [200]
