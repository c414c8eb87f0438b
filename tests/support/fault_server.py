"""A loopback upstream that misbehaves on request, for the resilience tests.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) and picks its behaviour
by the last path segment:

    ok           200 with a small JSON body
    reset-head   reads the request, then resets the connection (RST) before any answer
    reset-body   sends the head and half the body, then resets
    stall-head   reads the request and never answers (until the client gives up)
    stall-body   sends the head and half the body, then never sends the rest
    trickle      sends one body byte every 20 ms, forever
    flaky        503 while `failures` is above 0 (counting down), else 200
    hold         counts itself in `held`, answers 200 once `release` is set

`hits` counts requests by segment, `bodies` the request body sizes seen; `wait_held(n)`
returns once n requests are being held, so tests synchronise on events, not sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

OK_BODY = b'{"ok":true,"served_by":"fault-server"}'
_HALF = b'{"partial":"'


@dataclass
class FaultServer:
    url: str = ""
    failures: int = 0  # `flaky` answers 503 this many more times
    hits: Counter[str] = field(default_factory=Counter)
    bodies: list[int] = field(default_factory=list)
    held: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # set by stall-* requests
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_held(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.bodies.append(length)
                path = head.split(b" ", 2)[1].split(b"?")[0].decode()
                segment = path.rstrip("/").rsplit("/", 1)[-1]
                self.hits[segment] += 1
                if not await self._answer(segment, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, segment: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection is done."""
        if segment == "reset-head":
            _reset(writer)
            return False
        if segment in ("reset-body", "stall-body"):
            writer.write(_head(200, 2 * len(_HALF)) + _HALF)
            await writer.drain()
            if segment == "reset-body":
                _reset(writer)
            else:
                self.stalled.set()
                await reader.read()  # until the gateway gives up and closes
            return False
        if segment == "stall-head":
            self.stalled.set()
            await reader.read()
            return False
        if segment == "trickle":
            writer.write(_head(200, 1_000_000))
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.02)  # the fault itself: a slow, endless body
        if segment == "flaky" and self.failures > 0:
            self.failures -= 1
            writer.write(_head(503, 0))
            await writer.drain()
            return True
        if segment == "hold":
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            await self.release.wait()
        writer.write(_head(200, len(OK_BODY)) + OK_BODY)
        await writer.drain()
        return True


def _head(status: int, length: int) -> bytes:
    reason = {200: b"OK", 503: b"Service Unavailable"}[status]
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (
        status,
        reason,
        length,
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.asynccontextmanager
async def serve_faults() -> AsyncIterator[FaultServer]:
    faults = FaultServer()
    tasks: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await faults.handle(reader, writer)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    faults.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield faults
    finally:
        faults.release.set()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
