"""The fast upstream every proxy under test forwards to: a fixed ~100-byte JSON body.

Why not uvicorn serving an ASGI app? The upstream must never be the bottleneck, and on a small
machine it shares the CPUs with the load generator and the proxy under test, so every cycle it
spends is taken from them. uvicorn (uvloop + httptools) with a two-line ASGI app measured about
39k requests/s with wrk on one core here; this server, the same uvloop event loop and httptools
parser without the ASGI layer (no scope dicts, no per-request tasks), measured about 130k. A
proxy that reaches a sizeable share of the direct figure is then measured against a reference
that still has headroom, and nginx gets the same upstream.

It answers every request with 200 and the same body, honours keep-alive as the request asks
(HTTP/1.0 and ``Connection: close`` close after the response) and pipelined requests, and sends
``400`` and closes on a malformed request.

Run it with ``python -m bench.upstream --port PORT`` (host 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from email.utils import formatdate
from typing import cast

import httptools
import uvloop

BODY = (
    b'{"service":"bench-upstream","status":"ok",'
    b'"items":[1,2,3,4,5],"note":"a fixed body for proxy benchmarks"}'
)

_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _Responses:
    """The two response byte strings, rebuilt once a second for the Date header.

    RFC 9110 section 6.6.1: an origin server with a clock must send Date; formatting it per
    request would cost more than the rest of the response.
    """

    def __init__(self) -> None:
        self.keep_alive = b""
        self.close = b""
        self.refresh()

    def refresh(self) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n"
            b"date: %s\r\n" % (len(BODY), formatdate(usegmt=True).encode("ascii"))
        )
        self.keep_alive = head + b"\r\n" + BODY
        self.close = head + b"connection: close\r\n\r\n" + BODY

    def refresh_every_second(self) -> None:
        self.refresh()
        asyncio.get_running_loop().call_later(1.0, self.refresh_every_second)


class _Connection(asyncio.Protocol):
    """One client connection; httptools calls ``on_message_complete`` once per request."""

    _transport: asyncio.Transport

    def __init__(self, responses: _Responses, delay: float) -> None:
        self._responses = responses
        self._delay = delay
        self._parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP server's transports are full transports; the base type is the protocol's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.write(_BAD_REQUEST)
            self._transport.close()

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        if self._delay:  # a slow service (the shadow benchmark's slow candidate)
            asyncio.get_running_loop().call_later(self._delay, self._answer, keep_alive)
        else:
            self._answer(keep_alive)

    def _answer(self, keep_alive: bool) -> None:
        if self._transport.is_closing():
            return
        if keep_alive:
            self._transport.write(self._responses.keep_alive)
        else:
            self._transport.write(self._responses.close)
            self._transport.close()


def command(port: int, delay_ms: float = 0.0) -> list[str]:
    """The argv that serves the upstream on 127.0.0.1:``port`` in a child process."""
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    return [*argv, "--delay-ms", str(delay_ms)] if delay_ms else argv


async def serve(host: str, port: int, delay: float = 0.0) -> None:
    responses = _Responses()
    responses.refresh_every_second()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Connection(responses, delay), host, port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="answer this much later")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is stopped by hand
        uvloop.run(serve("127.0.0.1", args.port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
