"""50 MB each way through a gateway process whose memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.harness import Recorder, get, listening_socket, write_routes

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
SIZE = 50 * MB


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@contextlib.asynccontextmanager
async def gateway_process(routes: Path) -> AsyncIterator[tuple[int, int]]:
    sock = listening_socket()
    port = sock.getsockname()[1]
    sock.close()
    log = routes.with_suffix(".log")
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "gateway",
                "serve",
                "--routes",
                str(routes),
                "--port",
                str(port),
                "--no-access-log",
            ],
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # readiness: the health endpoint answers
            assert proc.poll() is None, log.read_text()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                assert time.monotonic() < deadline, "gateway did not start"
                await asyncio.sleep(0.05)
                continue
            writer.write(get("/_strangler/health"))
            status = await reader.readline()
            writer.close()
            if b" 200 " in status:
                break
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def upload(port: int, chunked: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {SIZE}"
    writer.write(
        f"POST /big/up HTTP/1.1\r\nHost: g\r\n{framing}\r\nConnection: close\r\n\r\n".encode()
    )
    block = b"u" * (256 * 1024)
    for _ in range(SIZE // len(block)):
        writer.write(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response


async def test_50mb_up_and_down_with_bounded_memory(upstream: Recorder, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{upstream.url}", timeout: 30s}}\n'
        "default: legacy\nmax_body: 64MiB\n",
    )
    async with gateway_process(routes) as (port, pid):
        baseline = memory_kib(pid, "VmRSS")

        for chunked in (False, True):
            response = await upload(port, chunked)
            assert response.startswith(b"HTTP/1.1 200"), response[:200]
            assert b'"body_size": %d' % SIZE in response
            assert upstream.seen[-1].body_size == SIZE

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/big/download?mb=50"))
        received = 0
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        while chunk := await reader.read(MB):
            received += len(chunk)
        writer.close()
        assert received > SIZE  # the body, plus chunk framing

        peak = memory_kib(pid, "VmHWM")
    # Buffers are bounded (socket buffers plus a 256 KiB read-ahead per connection):
    # 150 MB went through, and the process grew by a small fraction of one body.
    assert peak - baseline < 24 * 1024, f"peak {peak} KiB vs baseline {baseline} KiB"
