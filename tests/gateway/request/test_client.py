"""The upstream client against scripted servers that send exact bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.base.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.config.resilience import Timeouts
from gateway.config.routes import Upstream
from gateway.request.client import BodySourceError, Pool, Response

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[Pool, list[bytes]]]:
    """A server running `handler` per connection; yields a pool to it and request heads."""
    heads: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_head(reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        return head

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scripted.read_head = read_head  # type: ignore[attr-defined]
    pool = Pool(Upstream("u", f"http://127.0.0.1:{port}", timeout=2.0, connect_timeout=1.0, pool=2))
    try:
        yield pool, heads
    finally:
        pool.close()
        server.close()


async def read_all(response: Response) -> bytes:
    body = b""
    try:
        while chunk := await response.read():
            body += chunk
    finally:
        response.release()
    return body


async def test_content_length_keep_alive_reuses_one_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await scripted.read_head(reader)  # type: ignore[attr-defined]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello")
            await writer.drain()

    async with scripted(handler) as (pool, heads):
        for _ in range(3):
            response = await pool.request("GET", b"/x?y=1", [(b"x-b", b"2")])
            assert response.status == 200 and (b"X-A", b"1") in response.headers
            assert await read_all(response) == b"hello"
    assert connections == 1
    assert heads[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nx-b: 2\r\n" in heads[0]


async def test_chunked_and_read_until_close_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await scripted.read_head(reader)  # type: ignore[attr-defined]
        if b"/chunked" in head:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close")
        await writer.drain()

    async with scripted(handler) as (pool, _):
        assert await read_all(await pool.request("GET", b"/chunked", [])) == b"abcde"
        assert await read_all(await pool.request("GET", b"/close", [])) == b"until-close"


async def test_interim_1xx_is_skipped_and_head_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await scripted.read_head(reader)  # type: ignore[attr-defined]
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            else:
                writer.write(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
                )
            await writer.drain()

    async with scripted(handler) as (pool, _):
        head = await pool.request("HEAD", b"/", [])
        assert head.status == 200 and await read_all(head) == b""
        created = await pool.request("GET", b"/", [])
        assert created.status == 201 and created.headers == [(b"Content-Length", b"2")]
        assert await read_all(created) == b"ok"


async def test_garbage_response_is_upstream_unavailable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.read_head(reader)  # type: ignore[attr-defined]
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with scripted(handler) as (pool, _):
        with pytest.raises(UpstreamUnavailable, match="invalid response"):
            await pool.request("GET", b"/", [])


async def test_truncated_body_is_an_error_not_a_short_success() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.read_head(reader)  # type: ignore[attr-defined]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        await writer.drain()

    async with scripted(handler) as (pool, _):
        response = await pool.request("GET", b"/", [])
        with pytest.raises(UpstreamUnavailable, match="closed"):
            await read_all(response)


async def test_stalled_headers_time_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.read_head(reader)  # type: ignore[attr-defined]
        await reader.read()  # never answers; returns when the client aborts

    async with scripted(handler) as (pool, _):
        limits = Timeouts(connect=1.0, first_byte=0.2, idle=2.0, deadline=5.0)
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await pool.request("GET", b"/", [], limits=limits)


@pytest.mark.parametrize("with_body", [False, True])
async def test_reused_connection_dropped_by_upstream_is_retried_only_without_body(
    with_body: bool,
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while True:
            await scripted.read_head(reader)  # type: ignore[attr-defined]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if first:
                # The next request arrives as the upstream's idle timeout closes it.
                await scripted.read_head(reader)  # type: ignore[attr-defined]
                return

    async def body() -> AsyncIterator[bytes]:
        yield b"data"

    async with scripted(handler) as (pool, heads):
        assert await read_all(await pool.request("GET", b"/1", [])) == b"ok"
        if with_body:
            with pytest.raises(UpstreamUnavailable):
                await pool.request("POST", b"/2", [(b"content-length", b"4")], body(), 4)
            assert connections == 1  # not replayed: the upstream may have acted on it
        else:
            assert await read_all(await pool.request("GET", b"/2", [])) == b"ok"
            assert connections == 2
            assert [h.split(b" ")[1] for h in heads] == [b"/1", b"/2", b"/2"]


async def test_pool_limit_queues_requests_and_short_body_aborts() -> None:
    active = 0
    most = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, most
        while True:
            await scripted.read_head(reader)  # type: ignore[attr-defined]
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.01)
            active -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async with scripted(handler) as (pool, _):

        async def one() -> bytes:
            return await read_all(await pool.request("GET", b"/", []))

        assert await asyncio.gather(*(one() for _ in range(6))) == [b""] * 6
        assert most == 2  # pool: 2

        async def short() -> AsyncIterator[bytes]:
            yield b"abc"

        with pytest.raises(BodySourceError, match="shorter"):
            await pool.request("POST", b"/", [(b"content-length", b"10")], short(), 10)


async def test_an_upload_to_an_upstream_that_stops_reading_ends_at_the_deadline() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.read_head(reader)  # type: ignore[attr-defined]
        await asyncio.Event().wait()  # never reads the body: the socket buffers fill up

    size = 1024 * 1024 * 1024

    async def endless() -> AsyncIterator[bytes]:
        block = b"x" * 65536
        for _ in range(size // len(block)):
            yield block

    async with scripted(handler) as (pool, _):
        limits = Timeouts(connect=1.0, first_byte=30.0, idle=30.0, deadline=0.3)
        headers = [(b"content-length", str(size).encode())]
        with pytest.raises(UpstreamTimeout, match="deadline"):
            await pool.request("PUT", b"/", headers, endless(), size, limits=limits)


async def test_a_trickling_body_ends_at_the_deadline() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await scripted.read_head(reader)  # type: ignore[attr-defined]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.01)  # the fault: never idle, never done

    async with scripted(handler) as (pool, _):
        limits = Timeouts(connect=1.0, first_byte=1.0, idle=1.0, deadline=0.3)
        response = await pool.request("GET", b"/", [], limits=limits)
        with pytest.raises(UpstreamTimeout, match="deadline"):
            await read_all(response)
