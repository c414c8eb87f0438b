"""A fuzz of the request side (hypothesis, derandomised: the same examples on every run).

Requests are put together from parts that are each valid, odd or hostile (methods, targets,
versions, header lines, bodies, a second request pipelined behind the first), sent whole or
split. Whatever arrives, the invariant holds: the upstreams parse every byte they get as
whole requests framed by the gateway, one per answer the client got from them; every answer
the gateway made itself is JSON with an `error`; no request gets two answers; and the
gateway still serves a normal request afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.wire import Answer, Stack, check_gateway_error, exchange, running

T = TypeVar("T")

METHODS = [b"GET", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"get", b"G T", b"PRI"]
TARGETS = [
    b"/b/y?q=1",
    b"/secret",
    b"*",
    b"http://other.test/x",
    b"//x",
    b"/%2e%2e/x",
    b"/a;b",
    b"/x?" + b"q" * 600,
    b"x",
]
VERSIONS = [b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1 ", b"", b"HTTP/11"]
HOSTS = [b"Host: other.test", b"Host: a b", b"Host:", b"Host: a/b", b"HOST: x"]
HEADERS = [
    b"Content-Length: 0",
    b"Content-Length: 3",
    b"Content-Length: -1",
    b"Content-Length: 3, 3",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: chunked, identity",
    b"Transfer-Encoding : chunked",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: content-length",
    b"Connection: x-a, transfer-encoding",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"X-User-Id: root",
    b"X-User-Roles: admin",
    b"X-Strangler-Target: b",
    b"X-Forwarded-For: 10.0.0.1",
    b"Authorization: Bearer not-a-jwt",
    b"Authorization: Basic YTpi",
    b"X-A: \x01",
    b"X-A: a\x00b",
    b" X-Folded: 1",
    b"X-Long: " + b"l" * 2000,
    b"Cookie: a=1; b=2",
    b"\xff\xfe: 1",
]
ODD_BODIES = [b"3\r\nabc\r\n0\r\nHost: evil\r\nX-User-Id: t\r\n\r\n", b"zz\r\n", b"abc"]


def _framed(payload: bytes, how: str) -> tuple[list[bytes], bytes]:
    """The framing headers and the body of a valid request carrying `payload`."""
    if how == "length":
        return [b"Content-Length: %d" % len(payload)], payload
    if how == "chunked":
        chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (payload[:2], payload[2:]) if p)
        return [b"Transfer-Encoding: chunked"], chunks + b"0\r\nX-Trailer: 1\r\n\r\n"
    return [], b""


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Mostly valid requests (each part is valid half of the time), with odd parts mixed in."""
    method = draw(st.one_of(st.just(b"POST"), st.sampled_from(METHODS)))
    target = draw(st.one_of(st.just(b"/x"), st.sampled_from(TARGETS)))
    version = draw(st.one_of(st.just(b"HTTP/1.1"), st.sampled_from(VERSIONS)))
    hosts = draw(st.one_of(st.just([b"Host: gateway.test"]), st.lists(st.sampled_from(HOSTS))))
    payload = draw(st.binary(min_size=1, max_size=40))
    framing, body = _framed(payload, draw(st.sampled_from(["length", "chunked", "none"])))
    extra = draw(st.lists(st.sampled_from(HEADERS), max_size=3))
    if draw(st.booleans()):
        body = draw(st.sampled_from(ODD_BODIES))
    headers = hosts + draw(st.permutations(framing + extra))
    line = b" ".join(part for part in (method, target, version) if part)
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Any]]:
    """One gateway for every example, on an event loop of its own thread (hypothesis drives
    a plain function); short timeouts, so that an incomplete example ends quickly."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    edge = "edge: {header_timeout: 500ms, body_timeout: 500ms, idle_timeout: 500ms}\n"
    exits = contextlib.AsyncExitStack()
    path: Path = tmp_path_factory.mktemp("fuzz")
    stack = run(exits.enter_async_context(running(path, edge)))
    try:
        yield stack, run
    finally:
        run(exits.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


@settings(
    max_examples=500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=requests(), second=st.one_of(st.none(), requests()), split=st.booleans())
def test_fuzzed_requests_keep_the_invariant(
    live: tuple[Stack, Any], first: bytes, second: bytes | None, split: bool
) -> None:
    stack, run = live
    stack.a.requests.clear()
    stack.b.requests.clear()
    sent = 1 if second is None else 2
    answers: list[Answer] = run(
        exchange(stack.gateway.port, first + (second or b""), split, until=sent)
    )
    final = [a for a in answers if a.status >= 200]
    assert len(final) <= sent
    for answer in final:
        if answer.made_by_gateway:
            check_gateway_error(answer, answer.status)
    forwarded = stack.a.requests + stack.b.requests
    assert len(forwarded) == sum(1 for a in final if not a.made_by_gateway)
    for request in forwarded:
        assert request.header("x-trailer") == []
    stack.check_upstreams()
    for upstream in (stack.a, stack.b):
        for request in upstream.requests:
            hosts = {"gateway.test", "other.test", "x", f"127.0.0.1:{upstream.port}"}
            assert len(request.header("host")) == 1 and request.header("host")[0] in hosts
            assert not [n for n, _ in request.headers if n.startswith(("x-user-", "x-strangler-"))]
    normal = b"GET /after HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"
    assert [a.status for a in run(exchange(stack.gateway.port, normal))] == [200]
