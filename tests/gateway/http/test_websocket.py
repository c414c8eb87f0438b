"""WebSockets through the gateway, with a real server library upstream (websockets) and a real
client library on the other side: echo, streaming fragments, close codes, subprotocols,
authentication on the upgrade, limits, refusals, metrics, and no shadow copy."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from common.validation import ConfigError
from gateway.config.table import parse
from gateway.http.websocket import Meter
from tests.support.harness import (
    Recorder,
    admin_auth,
    get,
    raw_request,
    serve_gateway,
    serve_upstream,
    write_routes,
)

pytestmark = pytest.mark.anyio


class Upstream:
    """A websockets server: /echo echoes, /stream reports fragments as they arrive, /bye
    closes with 4001, /who says what the gateway told it; /refuse is answered 403."""

    def __init__(self) -> None:
        self.first_fragment = asyncio.Event()
        self.requests: list[Request] = []

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        if path.startswith("/live/echo"):
            async for message in ws:
                await ws.send(message)
        elif path == "/live/stream":
            fragments = []
            async for fragment in ws.recv_streaming():
                fragments.append(fragment)
                self.first_fragment.set()
            await ws.send(json.dumps(fragments))
        elif path == "/live/bye":
            await ws.close(4001, "bye")
        elif path == "/live/who":
            assert ws.request is not None
            await ws.send(json.dumps(dict(ws.request.headers.raw_items())))
            await ws.wait_closed()

    def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/live/refuse":
            return ws.respond(403, "not you\n")
        return None


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    async with serve(
        up.handler,
        "127.0.0.1",
        0,
        process_request=up.process_request,
        select_subprotocol=lambda ws, offered: "chat" if "chat" in offered else None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield up, f"http://127.0.0.1:{port}"


ROUTES = """
upstreams:
  legacy: {{url: "{url}", timeout: 2s}}
  candidate: {{url: "{candidate}"}}
default: legacy
routes:
  - {{name: live, path: /live, upstream: legacy, auth: optional, websocket: {websocket},
      shadow: {{upstream: candidate, sample: 1.0}}}}
  - {{name: plain, path: /plain, upstream: legacy}}
"""


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, websocket: str = "true"
) -> AsyncIterator[tuple[Upstream, str, Any, Recorder]]:
    async with upstream() as (up, url), serve_upstream("candidate") as candidate:
        routes = tmp_path / "routes.yaml"
        text = ROUTES.format(url=url, candidate=candidate.url, websocket=websocket)
        write_routes(routes, text)
        async with serve_gateway(routes) as gw:
            yield up, f"ws://127.0.0.1:{gw.port}", gw, candidate


async def test_echo_subprotocol_and_close_codes_pass_through(tmp_path: Path) -> None:
    async with stack(tmp_path) as (_, ws_url, gw, candidate):
        async with connect(ws_url + "/live/echo", subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            assert ws.response is not None
            assert ws.response.headers["X-Strangler-Upstream"] == "legacy"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01" * 40_000)  # 80 KB, more than one read
            assert await ws.recv() == b"\x00\x01" * 40_000
        async with connect(ws_url + "/live/bye") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")
        await gw.app.mirror.drain()
    assert candidate.seen == []  # never mirrored


async def test_fragments_are_relayed_as_they_come(tmp_path: Path) -> None:
    async with stack(tmp_path) as (up, ws_url, _, _):
        async with connect(ws_url + "/live/stream") as ws:

            async def fragments() -> AsyncIterator[str]:
                yield "first "
                await up.first_fragment.wait()  # the upstream has it before the rest exists
                yield "second"

            await ws.send(fragments())
            # the library ends a fragmented message with an empty final frame
            assert json.loads(await ws.recv()) == ["first ", "second", ""]


async def test_the_upgrade_is_authenticated_and_the_identity_passed_on(tmp_path: Path) -> None:
    async with stack(tmp_path) as (_, ws_url, _, _):
        token = admin_auth().split(": ", 1)[1]
        headers = {"Authorization": token, "X-User-Id": "forged"}
        async with connect(ws_url + "/live/who", additional_headers=headers) as ws:
            seen = json.loads(await ws.recv())
    seen = {name.lower(): value for name, value in seen.items()}
    assert seen["x-user-id"] == "operator" and seen["x-user-roles"] == "admin"
    assert "authorization" not in seen  # the gateway's to consume
    assert seen["host"].startswith("127.0.0.1:")  # the client's Host, as for any request


async def test_refusals_are_the_gateways_json_or_the_upstreams_answer(tmp_path: Path) -> None:
    async with stack(tmp_path) as (_, ws_url, gw, _):
        with pytest.raises(InvalidStatus) as plain:
            await connect(ws_url + "/plain/x")
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url + "/live/refuse")
        h2c = get("/live/x", "Connection: Upgrade", "Upgrade: h2c").replace(
            b"Connection: close\r\n", b""
        )
        other = await raw_request(gw.port, h2c)
    assert plain.value.response.status_code == 501
    assert json.loads(plain.value.response.body or b"{}")["error"] == "not_implemented"
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"not you\n"
    assert other.status == 501 and other.json()["error"] == "not_implemented"


async def test_a_message_over_the_limit_closes_with_1009(tmp_path: Path) -> None:
    async with stack(tmp_path, "{max_message: 1KiB}") as (_, ws_url, _, _):
        async with connect(ws_url + "/live/echo") as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            await ws.send("x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_an_idle_tunnel_is_closed_with_1001_and_counted(tmp_path: Path) -> None:
    async with stack(tmp_path, "{idle_timeout: 200ms}") as (_, ws_url, gw, _):
        async with connect(ws_url + "/live/echo") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        async with connect(ws_url + "/live/echo") as ws:
            await ws.send("one")
            await ws.recv()
        await until_closed(gw, 2)
        metrics = await raw_request(gw.port, get("/metrics", admin_auth()))
    text = metrics.body.decode()
    assert 'strangler_websocket_upgrades_total{outcome="tunnelled",route="live"} 2.0' in text
    assert 'strangler_websocket_closed_total{reason="idle",route="live"} 1.0' in text
    assert 'strangler_websocket_closed_total{reason="closed",route="live"} 1.0' in text
    assert 'strangler_websocket_messages_total{direction="client",route="live"} 1.0' in text
    assert 'strangler_websocket_open{route="live"} 0.0' in text


async def until_closed(gw: Any, count: int) -> None:
    """Until the gateway has counted `count` tunnels as closed (it learns a little later)."""
    stats = gw.app.websockets.stats
    async with asyncio.timeout(10):
        while True:
            if sum(stats.closed.values()) >= count:
                return
            await asyncio.sleep(0.01)  # polling the gateway's state, with a deadline


def test_the_websocket_key_is_validated_with_its_line() -> None:
    text = (
        'upstreams:\n  a: {url: "http://127.0.0.1:9"}\ndefault: a\nauth: {default: none}\n'
        "authz: none\nroutes:\n  - {name: r, path: /r, upstream: a, websocket: yes}\n"
        "  - {name: s, path: /s, upstream: a, websocket: {max_message: big}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse(text.encode(), "routes.yaml")
    assert [str(i) for i in info.value.issues] == [
        "line 7: route 'r': websocket must be true, false or a mapping of its limits",
        "line 8: route 's': websocket: max_message: bad size 'big' (use e.g. 512KiB, 10MiB,"
        " 1048576)",
    ]


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    return Frame(Opcode(opcode), payload, fin=fin).serialize(mask=masked, extensions=[])


@pytest.mark.parametrize("step", [1, 3, 7, 4096], ids=lambda s: f"{s}-byte reads")
def test_the_meter_follows_frames_across_reads(step: int) -> None:
    stream = (
        frame(0x1, b"a" * 100)  # a text message
        + frame(0x2, b"b" * 70_000, fin=False)  # a binary message in two frames (64-bit length)
        + frame(0x9, b"ping")  # a control frame between them: not a message, not counted
        + frame(0x0, b"c" * 30_000, fin=True, masked=False)
    )
    meter = Meter(limit=100_000)
    assert all(meter.feed(stream[i : i + step]) for i in range(0, len(stream), step))
    assert meter.messages == 2
    too_big = Meter(limit=100_000)
    assert not too_big.feed(frame(0x2, b"b" * 70_000, fin=False) + frame(0x0, b"c" * 40_000))
