"""The forward stage on its own: the request as sent upstream, the exchange (a fake
resilience), the relay, and the copy handed to the mirror; and the request body's rules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.base.errors import BadRequest, BodyTooLarge
from gateway.base.types import Message
from gateway.config.table import parse
from gateway.http.forward import Forward
from gateway.http.websocket import WebSockets
from gateway.request.body import ClientGone, RequestBody, request_body
from gateway.request.context import RequestContext
from gateway.request.pools import Pools
from gateway.shadow.mirror import BODY_TOO_LARGE

pytestmark = pytest.mark.anyio

TABLE = parse(
    b"upstreams:\n"
    b'  legacy: {url: "http://127.0.0.1:9"}\n'
    b'  search: {url: "http://127.0.0.1:8"}\n'
    b"auth: {default: none}\nauthz: none\n"
    b"routes:\n"
    b"  - name: search\n    path: /api\n    strip_prefix: true\n    upstream: legacy\n"
    b"    shadow: {upstream: search, max_body: 4B}\n"
)


class Response:
    def __init__(self) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"text/plain")]
        self.at_eof = self.buffered = True
        self.released = False

    async def read(self) -> bytes:
        return b"hello"

    def release(self) -> None:
        self.released = True


class Resilience:
    def __init__(self) -> None:
        self.asked: list[tuple[bytes, bytes | None]] = []
        self.response = Response()

    async def exchange(
        self, pool: Any, ctx: RequestContext, body: AsyncIterator[bytes] | None, length: int | None
    ) -> Response:
        sent = b"".join([chunk async for chunk in body]) if body is not None else None
        self.asked.append((ctx.target, sent))
        return self.response


class Mirror:
    def __init__(self) -> None:
        self.launched: list[Any] = []
        self.drops: list[str] = []

    def admit(self, route: Any) -> bool:
        return True

    def dropped(self, route: Any, reason: str) -> None:
        self.drops.append(reason)

    def launch(self, copy: Any) -> None:
        self.launched.append(copy)


def messages(*bodies: bytes) -> Any:
    queue: list[Message] = [
        {"type": "http.request", "body": b, "more_body": i < len(bodies) - 1}
        for i, b in enumerate(bodies)
    ]

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


def context(*headers: tuple[bytes, bytes], method: str = "GET") -> RequestContext:
    scope = {
        "method": method,
        "path": "/api/items",
        "query_string": b"q=1",
        "headers": [(b"host", b"gw.test"), *headers],
        "client": ("192.0.2.1", 1),
    }
    ctx = RequestContext(scope, TABLE, "req-1", time.perf_counter(), path="/api/items")
    ctx.route, ctx.upstream = TABLE.routes[0], TABLE.upstreams["legacy"]
    return ctx


def forward() -> tuple[Forward, Resilience, Mirror]:
    resilience, mirror = Resilience(), Mirror()
    stage = Forward(Pools(), resilience, mirror, WebSockets())  # type: ignore[arg-type]
    return stage, resilience, mirror


async def sink(message: Message) -> None:
    return None


async def test_the_request_goes_upstream_as_routed_and_its_copy_to_the_mirror() -> None:
    stage, resilience, mirror = forward()
    ctx = context((b"content-length", b"2"))
    await stage(ctx, messages(b"{}"), sink)
    assert resilience.asked == [(b"/items?q=1", b"{}")]  # strip_prefix, the query kept
    assert (b"x-request-id", b"req-1") in ctx.headers
    assert (ctx.status, ctx.sent) == (200, 5) and resilience.response.released
    (copy,) = mirror.launched
    assert copy.target == b"/items?q=1" and copy.body == b"{}"
    assert copy.response_body == b"hello" and copy.status == 200 and not copy.truncated


async def test_a_body_over_the_shadow_cap_is_forwarded_but_not_mirrored() -> None:
    stage, resilience, mirror = forward()
    await stage(context((b"content-length", b"5")), messages(b"12345"), sink)
    assert resilience.asked == [(b"/items?q=1", b"12345")]
    assert mirror.launched == [] and mirror.drops == [BODY_TOO_LARGE]


async def test_a_client_gone_before_its_body_is_read_never_reaches_the_upstream() -> None:
    stage, resilience, _ = forward()
    with pytest.raises(ClientGone):
        await stage(context((b"transfer-encoding", b"chunked")), messages(), sink)
    assert resilience.asked == []


def test_the_request_body_is_sized_from_its_headers() -> None:
    receive = messages()
    assert request_body([], receive, 10) == (None, None)
    assert request_body([(b"content-length", b"0")], receive, 10) == (None, None)
    body, length = request_body([(b"content-length", b"3")], receive, 10)
    assert isinstance(body, RequestBody) and length == 3
    chunked, unknown = request_body([(b"transfer-encoding", b"chunked")], receive, 10)
    assert isinstance(chunked, RequestBody) and unknown is None
    with pytest.raises(BadRequest):
        request_body([(b"content-length", b"x")], receive, 10)
    with pytest.raises(BodyTooLarge):
        request_body([(b"content-length", b"11")], receive, 10)


async def test_a_chunked_body_is_capped_as_it_arrives() -> None:
    body = RequestBody(messages(b"123456", b"78901"), 10)
    with pytest.raises(BodyTooLarge):
        await body.buffer(1024)
