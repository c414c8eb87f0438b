"""Slow and many clients: what a client can hold of the gateway is bounded.

Timeouts are set short in these gateways' `edge:` sections; the tests wait for the gateway
to act (a read that returns), never for a wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.harness import get
from tests.support.wire import READ_TIMEOUT, Stack, check_gateway_error, exchange, running

pytestmark = pytest.mark.anyio

PARTIAL_HEAD = b"GET /x HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: "
SLOW_UPLOAD = b"POST /b/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 100\r\n\r\nabc"
HEALTH = get("/_strangler/health")


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the gateway sends until it closes the connection."""
    received = bytearray()
    async with asyncio.timeout(READ_TIMEOUT):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
    return bytes(received)


async def answered(port: int) -> None:
    """Until GET /x is answered 200 (the gateway notices closed connections a little later)."""
    async with asyncio.timeout(READ_TIMEOUT):
        while True:
            if [a.status for a in await exchange(port, get("/x"))] == [200]:
                return
            await asyncio.sleep(0.01)  # polling the gateway's state, with a deadline


@contextlib.asynccontextmanager
async def holding(port: int, data: bytes, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """`count` connections that sent `data` and then nothing more."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if data:
                writer.write(data)
                await writer.drain()
            readers.append(reader)
            writers.append(writer)
        yield readers
    finally:
        for writer in writers:
            writer.close()


async def test_half_sent_headers_get_408_after_the_header_timeout(tmp_path: Path) -> None:
    async with running(tmp_path, "edge: {header_timeout: 200ms}\n") as stack:
        async with holding(stack.gateway.port, PARTIAL_HEAD, 1) as (reader,):
            received = await until_closed(reader)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'"error":"request_timeout"' in received
    assert stack.a.requests == []


async def test_a_half_sent_body_gets_408_and_no_upstream_sees_it(tmp_path: Path) -> None:
    async with running(tmp_path, "edge: {body_timeout: 200ms}\n") as stack:
        async with holding(stack.gateway.port, SLOW_UPLOAD, 1) as (reader,):
            received = await until_closed(reader)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert stack.b.requests == [] and stack.b.raw == []  # buffered: no upstream connection


async def test_idle_connections_are_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with running(tmp_path, "edge: {idle_timeout: 200ms}\n") as stack:
        async with holding(stack.gateway.port, b"", 1) as (never,):
            assert await until_closed(never) == b""  # closed without a word
        kept = get("/x").replace(b"Connection: close\r\n", b"")
        async with holding(stack.gateway.port, kept, 1) as (reader,):
            received = await until_closed(reader)  # answered, then closed when idle
    assert received.startswith(b"HTTP/1.1 200 ") and received.count(b"HTTP/1.1") == 1


async def test_200_slow_clients_do_not_starve_requests_or_health(tmp_path: Path) -> None:
    async with running(tmp_path) as stack:
        port = stack.gateway.port
        async with holding(port, PARTIAL_HEAD, 150), holding(port, SLOW_UPLOAD, 50):
            for _ in range(3):
                assert [a.status for a in await exchange(port, get("/x"))] == [200]
                assert [a.status for a in await exchange(port, HEALTH)] == [200]
                upload = SLOW_UPLOAD.replace(b"100", b"3") + b"\r\nConnection: close"
                assert [a.status for a in await exchange(port, upload)] == [200]
        # the slow uploads never reached the upstream, nor held a connection to it
        assert [r.target for r in stack.b.requests] == ["/b/upload"] * 3
        stack.check_upstreams()


CAPPED = "edge: {max_connections: 20, admin_headroom: 5}\n"


async def test_past_the_connection_cap_only_the_admin_paths_answer(tmp_path: Path) -> None:
    async with running(tmp_path, CAPPED) as stack:
        port = stack.gateway.port
        async with holding(port, PARTIAL_HEAD, 20):  # busy, not idle: none can be closed
            (refused,) = await exchange(port, get("/x"))
            check_gateway_error(refused, 503, "too_many_connections")
            assert refused.header("retry-after") == ["1"]
            assert [a.status for a in await exchange(port, HEALTH)] == [200]
            async with holding(port, PARTIAL_HEAD, 5):  # the headroom taken too
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(HEALTH)
                assert await until_closed(reader) == b""  # past cap + headroom: closed at once
                writer.close()
        await answered(port)  # room again, once the gateway has seen them go
    assert [r.target for r in stack.a.requests] == ["/x"]


async def test_at_the_cap_an_idle_connection_makes_room(tmp_path: Path) -> None:
    async with running(tmp_path, CAPPED) as stack:
        port = stack.gateway.port
        async with holding(port, b"", 20) as idle:
            assert [a.status for a in await exchange(port, get("/x"))] == [200]
            reads = [asyncio.ensure_future(reader.read(1)) for reader in idle]
            done, pending = await asyncio.wait(
                reads, timeout=READ_TIMEOUT, return_when="FIRST_COMPLETED"
            )
            for read in pending:
                read.cancel()
            assert [read.result() for read in done] == [b""]  # one gave its place, closed


async def test_limits_come_from_the_live_table(stack: Stack) -> None:
    edge = stack.gateway.app.watcher.table.edge
    assert (edge.max_header_bytes, edge.max_headers, edge.header_timeout) == (65536, 100, 10.0)
