"""Both ends of the wire for the edge's conformance suite: recording upstreams and a raw client.

The recording upstream parses what it receives with h11, a parser independent of the
gateway's (llhttp), keeps every byte of every connection, and answers each request it parsed
with a JSON body naming itself. After a case, `check_framing` asserts the invariant on the
upstream's side: every byte it received belongs to a complete request, framed by the
gateway (Content-Length or nothing; never the client's chunked framing or trailers).

The raw client writes a case's bytes in one write or split into many, then reads until the
gateway closes the connection and splits what arrived into responses (httptools), so that a
second response, or bytes after one, are seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httptools

from tests.support.harness import Gateway, serve_gateway, write_routes

READ_TIMEOUT = 10.0  # a case whose connection stays open this long has failed


class _Headed:
    headers: list[tuple[str, str]]  # lower-case names

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass
class Received(_Headed):
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Recording:
    """An upstream on loopback that records and answers every request."""

    name: str
    port: int = 0
    requests: list[Received] = field(default_factory=list, repr=False)
    raw: list[bytearray] = field(default_factory=list, repr=False)  # per connection
    errors: list[str] = field(default_factory=list)  # what h11 could not parse
    leftovers: list[bytes] = field(default_factory=list)  # bytes past the last request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        raw = bytearray()
        self.raw.append(raw)
        request: Received | None = None
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    raw += data
                    conn.receive_data(data)
                    if not data:
                        break
                elif isinstance(event, h11.Request):
                    headers = [(k.decode(), v.decode("latin-1")) for k, v in event.headers]
                    request = Received(event.method.decode(), event.target.decode(), headers, b"")
                elif isinstance(event, h11.Data) and request is not None:
                    request.body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    self.requests.append(request)
                    writer.write(self._answer(conn, len(self.requests)))
                    await writer.drain()
                    request = None
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as exc:
            self.errors.append(str(exc))
        except ConnectionError:
            pass
        finally:
            data, _closed = conn.trailing_data
            if data or request is not None:
                self.leftovers.append(bytes(data) or b"<an incomplete request>")
            writer.close()

    def _answer(self, conn: h11.Connection, number: int) -> bytes:
        body = json.dumps({"upstream": self.name, "request": number}).encode()
        head = conn.send(
            h11.Response(
                status_code=200,
                headers=[("content-type", "application/json"), ("content-length", str(len(body)))],
            )
        )
        return (
            (head or b"")
            + (conn.send(h11.Data(data=body)) or b"")
            + (conn.send(h11.EndOfMessage()) or b"")
        )

    def check_framing(self) -> None:
        """What the gateway sent is what the upstream parsed, in whole requests."""
        assert self.errors == [], self.errors
        assert self.leftovers == [], self.leftovers
        for request in self.requests:
            assert request.header("transfer-encoding") == [], request
            assert len(request.header("host")) == 1
            lengths = request.header("content-length")
            if request.body:
                assert lengths == [str(len(request.body))], request
            else:
                assert lengths in ([], ["0"]), request


@contextlib.asynccontextmanager
async def recording(name: str) -> AsyncIterator[Recording]:
    upstream = Recording(name)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


@dataclass
class Scripted:
    """An upstream that reads one request per connection and writes `answer` back, in one
    write or in pieces; it counts its connections."""

    answer: bytes
    split: bool = False
    port: int = 0
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        await reader.readexactly(int(value))
                for piece in pieces(self.answer) if self.split else [self.answer]:
                    writer.write(piece)
                    await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: bytes, split: bool = False) -> AsyncIterator[Scripted]:
    upstream = Scripted(answer, split)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def pieces(data: bytes) -> list[bytes]:
    """`data` cut into pieces of 1, 2, 3, 5, 8 and 13 bytes, in turn (past 4 KiB, 997)."""
    sizes = itertools.cycle((1, 2, 3, 5, 8, 13) if len(data) <= 4096 else (997,))
    out, at = [], 0
    for size in sizes:
        if at >= len(data):
            return out
        out.append(data[at : at + size])
        at += size
    raise AssertionError("unreachable")


@dataclass
class Answer(_Headed):
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def made_by_gateway(self) -> bool:
        return not self.header("x-strangler-upstream")

    def json(self) -> Any:
        return json.loads(self.body)


class _Responses:
    """httptools callbacks: every response in a byte stream."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = [], bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.answers.append(Answer(status, self._headers, bytes(self._body)))


async def exchange(
    port: int, data: bytes, split: bool = False, until: int | None = None
) -> list[Answer]:
    """Write `data` (whole, or in `pieces`) and read every response until the gateway
    closes the connection, or until `until` final responses have arrived. Bytes that are
    not a whole response fail the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    responses = _Responses()
    try:
        for piece in pieces(data) if split else [data]:
            writer.write(piece)
            await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT):
            while chunk := await reader.read(65536):
                responses.parser.feed_data(chunk)
                final = [a for a in responses.answers if a.status >= 200]
                if until is not None and len(final) >= until:
                    break
    except ConnectionResetError:
        pass  # the gateway may reset a connection it refused while we were still sending
    finally:
        writer.close()
    return responses.answers


def check_gateway_error(answer: Answer, status: int, code: str | None = None) -> None:
    """A response the gateway made: JSON with an `error`, and the connection's end said."""
    assert answer.status == status, (answer.status, answer.body)
    assert answer.made_by_gateway
    assert answer.header("content-type") == ["application/json"]
    body = answer.json()
    assert isinstance(body["error"], str) and body["request_id"]
    if code is not None:
        assert body["error"] == code, body


Check = Callable[[list[Received]], None]


@dataclass(repr=False)  # hypothesis prints the fixture with a failing example
class Stack:
    gateway: Gateway
    a: Recording  # the default upstream
    b: Recording  # /b and /secret (a token required)

    def check_upstreams(self) -> None:
        self.a.check_framing()
        self.b.check_framing()


ROUTES = """
upstreams:
  a: {{url: "{a}", timeout: 5s, retries: off}}
  b: {{url: "{b}", timeout: 5s, retries: off}}
default: a
max_body: 1MiB
{edge}routes:
  - {{name: b, path: /b, upstream: b}}
  - {{name: secret, path: /secret, upstream: b, auth: required}}
"""


@contextlib.asynccontextmanager
async def running(tmp_path: Path, edge: str = "") -> AsyncIterator[Stack]:
    """The gateway in front of two recording upstreams; `edge`: an `edge:` section."""
    async with recording("a") as a, recording("b") as b:
        routes = tmp_path / "routes.yaml"
        write_routes(routes, ROUTES.format(a=a.url, b=b.url, edge=edge))
        async with serve_gateway(routes) as gateway:
            yield Stack(gateway, a, b)
