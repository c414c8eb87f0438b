"""A loopback server that speaks OPA's REST Data API, for the `opa` adapter's tests.

`POST /v1/data/<package path>` with `{"input": ...}` evaluates the same policy files as the
embedded adapter, with regopy, behind real HTTP on 127.0.0.1, and answers as OPA does:
`{"result": <document>}`, `{}` when the document is undefined, 400 for a body that is not
JSON, 500 when evaluation fails. It uses regopy's plain query API rather than the gateway's
code, so the two adapters share the policy files and nothing else.

`mode` switches it into the failure modes the adapter must survive; `connections` counts
the TCP connections it was sent requests on (one per client port), to see keep-alive work.

It listens on a socket made with IPPROTO_TCP, unlike harness.listening_socket: asyncio sets
TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without it every kept-alive
response (headers and body in two writes) waits ~40 ms for the client's delayed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import uvicorn

from gateway.identity.rego import Input, Interpreter

Mode = Literal["evaluate", "stall", "error", "undefined", "garbage"]


@dataclass
class OpaStandIn:
    policies: Path
    url: str = ""
    mode: Mode = "evaluate"
    decision_ids: bool = False  # OPA sends decision_id only when decision logging is on
    requests: int = 0
    clients: set[tuple[str, int]] = field(default_factory=set)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _interpreter: Interpreter = field(default_factory=Interpreter)

    def __post_init__(self) -> None:
        for file in sorted(self.policies.rglob("*.rego")):
            if not file.name.endswith("_test.rego"):
                self._interpreter.add_module(str(file), file.read_text())

    @property
    def connections(self) -> int:
        return len(self.clients)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        self.clients.add(tuple(scope["client"]))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if self.mode == "stall":
            self.entered.set()
            await self.release.wait()
        status, payload = self._answer(scope["path"], body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _answer(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.mode == "error":
            return 500, b'{"code": "internal_error", "message": "boom"}'
        if self.mode == "garbage":
            return 200, b'{"result": {"allow": tru'
        if self.mode == "undefined" or not path.startswith("/v1/data/"):
            return 200, b"{}"
        try:
            document = json.loads(body)["input"]
        except (ValueError, KeyError):
            return 400, b'{"code": "invalid_parameter", "message": "bad body"}'
        self._interpreter.set_input(Input(document))
        output = self._interpreter.query("data." + path.removeprefix("/v1/data/").replace("/", "."))
        if not output.ok():
            return 500, json.dumps({"code": "internal_error", "message": str(output)}).encode()
        answer: dict[str, Any] = {}
        if output.results and output.results[0].expressions:
            answer["result"] = output.results[0].expressions[0]
        if self.decision_ids:
            answer["decision_id"] = f"opa-{self.requests}"
        return 200, json.dumps(answer).encode()


@contextlib.asynccontextmanager
async def serve_opa(policies: Path) -> AsyncIterator[OpaStandIn]:
    stand_in = OpaStandIn(policies)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue until uvicorn accepts: no readiness polling
    stand_in.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(stand_in, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield stand_in
    finally:
        stand_in.release.set()  # let stalled handlers finish so the server can stop
        server.should_exit = True
        await task
        sock.close()


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
