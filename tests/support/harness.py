"""Loopback servers and a raw HTTP/1.1 client for the gateway's tests.

The raw client writes request bytes exactly as given: httpx and friends normalise paths
(`/a/../b`, `%2F`) before sending, which would hide what the gateway does with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import uvicorn

from gateway.app import GatewayApp
from gateway.http import server as edge
from gateway.http.accesslog import AccessLog

Scope = dict[str, Any]

# Routing-only tests: no tokens, no policy (both must be said explicitly in routes.yaml). The
# key is there for the admin API, which needs a token with the role admin whatever the file's
# `auth.default` says (`admin_auth()`).
ADMIN_SECRET = "harness-admin-key-0123456789abcdef0123456789"
OPEN_ACCESS = (
    "auth:\n  default: none\n"
    f'  keys: [{{id: admin, algorithm: HS256, secret: "{ADMIN_SECRET}"}}]\n'
    "authz: none\n"
)


def admin_token(roles: tuple[str, ...] = ("admin",)) -> str:
    """A token for the admin API of an OPEN_ACCESS gateway."""
    claims = {"sub": "operator", "roles": list(roles), "exp": int(time.time()) + 3600}
    return jwt.encode(claims, ADMIN_SECRET, algorithm="HS256", headers={"kid": "admin"})


def admin_auth(roles: tuple[str, ...] = ("admin",)) -> str:
    """... as an Authorization header line."""
    return f"Authorization: Bearer {admin_token(roles)}"


def write_routes(path: Path, text: str) -> None:
    path.write_text(text + OPEN_ACCESS)


def listening_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets; without it each
    # answer on a kept-alive connection waits ~40 ms for the peer's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue until uvicorn accepts: no readiness polling
    return sock


@contextlib.asynccontextmanager
async def serve(
    app: Any, lifespan: str = "off", config: uvicorn.Config | None = None, **tls: Any
) -> AsyncIterator[str]:
    """`tls`: uvicorn's ssl_* options; the URL is then https. `config`: a whole config instead
    (the gateway's, from gateway.http.server)."""
    sock = listening_socket()
    port = sock.getsockname()[1]
    if config is None:
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            http="httptools",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            **tls,
        )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Seen:
    method: str
    raw_path: str
    query: str
    headers: list[tuple[str, str]]
    body_size: int

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass
class Recorder:
    """The test upstream: answers by path and records every request it saw."""

    name: str = "upstream"
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        path: str = scope["raw_path"].decode()
        seen = Seen(
            scope["method"],
            path,
            scope["query_string"].decode(),
            [(k.decode(), v.decode()) for k, v in scope["headers"]],
            size,
        )
        self.seen.append(seen)
        status, headers, chunks = 200, [(b"content-type", b"application/json")], None
        last = path.rstrip("/").rsplit("/", 1)[-1]  # behaviour by the last segment
        if last == "hold":
            self.entered.set()
            await self.release.wait()
        if last == "slow":
            await asyncio.sleep(1)  # well past the 200ms timeout the tests configure
        if last == "redirect":
            status = 302
            headers.append((b"location", (self.url + "/v2/next?x=1").encode()))
        if last == "download":
            size_mb = int(scope["query_string"].decode().split("=")[1])
            chunks = size_mb * 16
        body = json.dumps(
            {
                "served_by": self.name,
                "method": seen.method,
                "path": seen.raw_path,
                "query": seen.query,
                "body_size": size,
            }
        ).encode()
        if chunks is not None:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            block = b"x" * 65536
            for _ in range(chunks):
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve_upstream(name: str = "upstream", **tls: Any) -> AsyncIterator[Recorder]:
    recorder = Recorder(name)
    async with serve(recorder, **tls) as url:
        recorder.url = url
        yield recorder


@dataclass
class Gateway:
    url: str
    app: GatewayApp

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def serve_gateway(
    routes: Path, access_log: AccessLog | None = None, **tls: Any
) -> AsyncIterator[Gateway]:
    app = GatewayApp(routes, reload_interval=0, access_log=access_log)
    config = edge.config(app, lambda: app.watcher.table.edge, log_level="warning", **tls)
    async with serve(app, config=config, **tls) as url:
        yield Gateway(url, app)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, head: bytes, body: bytes = b"") -> RawResponse:
    """Send one request exactly as written and read the response (connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        headers: list[tuple[str, str]] = []
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = next((int(v) for k, v in headers if k == "content-length"), None)
        if head.startswith(b"HEAD "):
            content = b""
        elif length is not None:
            content = await reader.readexactly(length)
        elif any(k == "transfer-encoding" for k, _ in headers):
            content = await _read_chunked(reader)
        else:
            content = await reader.read()
        return RawResponse(status, headers, content)
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readline()


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gateway.test", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
