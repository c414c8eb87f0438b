"""The response side: what an upstream answers, and what the client gets of it.

Each scripted upstream answers every request with the same bytes, in one write or in many;
the client must get exactly one response per request: the upstream's first response when it
is a valid one, else the gateway's 502 in JSON. An upstream connection that carried more
than one response is never used again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.harness import serve_gateway, write_routes
from tests.support.wire import check_gateway_error, exchange, scripted

pytestmark = pytest.mark.anyio

GET = b"GET /x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok"


@dataclass
class Case:
    name: str
    answer: bytes
    status: int
    body: bytes | None = None  # None: the gateway's 502
    extra: bool = False  # bytes past the response: the connection must not be reused


CASES = [
    Case("one response", OK, 200, b"ok"),
    Case(
        "two responses in one write: only the first",
        OK + b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\nX-Second: 1\r\n\r\nz",
        200,
        b"ok",
        extra=True,
    ),
    Case("bytes after the response", OK + b"garbage", 200, b"ok", extra=True),
    Case("a status of 999", b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", 502),
    Case("a status of 20", b"HTTP/1.1 20 Odd\r\nContent-Length: 0\r\n\r\n", 502),
    Case("101 not asked for", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 502),
    Case("an invalid status line", b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", 502),
    Case("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n", 502),
    Case(
        "Content-Length with Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        502,
    ),
    Case(
        "two Content-Lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        502,
    ),
    Case(
        "an interim 103, then the response",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
        200,
        b"ok",
    ),
    Case(
        "chunked with a trailer",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
        200,
        b"ok",
    ),
    Case(
        "Connection naming Content-Length",
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok",
        200,
        b"ok",
    ),
    Case(
        "X-Strangler headers of the upstream's own",
        b"HTTP/1.1 200 OK\r\nX-Strangler-Upstream: evil\r\nX-Strangler-Debug: 1\r\n"
        b"Content-Length: 2\r\n\r\nok",
        200,
        b"ok",
    ),
    Case("a body cut short", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", 200, None),
]


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "many-writes"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_response_case(case: Case, split: bool, tmp_path: Path) -> None:
    async with scripted(case.answer, split) as upstream:
        routes = tmp_path / "routes.yaml"
        text = f'upstreams:\n  a: {{url: "{upstream.url}", timeout: 2s, retries: off}}\n'
        write_routes(routes, text + "default: a\n")
        async with serve_gateway(routes) as gateway:
            first = await exchange(gateway.port, GET)
            second = await exchange(gateway.port, GET)
    if case.name == "a body cut short":
        # the head went out before the body failed: the client sees the truncation, as the
        # connection closes before the promised length (and no second response)
        assert first == [] and second == []
        return
    for answers in (first, second):
        assert len(answers) == 1, answers
        (answer,) = answers
        if case.body is None:
            check_gateway_error(answer, 502, "upstream_unavailable")
            continue
        assert (answer.status, answer.body) == (case.status, case.body)
        assert answer.header("x-strangler-upstream") == ["a"]
        assert answer.header("x-second") == [] and answer.header("x-strangler-debug") == []
        assert len(answer.header("content-length") + answer.header("transfer-encoding")) == 1
    # a connection that carried extra bytes, or a bad response, is not used again
    assert upstream.connections == (2 if case.extra or case.body is None else 1)
