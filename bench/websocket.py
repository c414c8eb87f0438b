"""The WebSocket benchmark: echo round trips through the gateway against the upstream directly.

One upstream (``bench.wsecho``) echoes every message. The same client (the websockets
library) makes ``--messages`` sequential round trips of a 64-byte text message on one
connection, first to the upstream directly, then through the gateway (a route with
``websocket: true``: the upgrade is decided like any request, then the connections are
spliced). The ratio is the gateway's median round trip over the direct one's: what the
tunnel adds to each message, both ways.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect

from bench.process import free_port, running
from bench.proxy import GATEWAY_HEALTH_PATH, gateway_command

MESSAGE = "x" * 64
_ROUTES = """\
upstreams:
  echo: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: echo
auth: {{default: none}}
authz: none
routes:
  - {{name: echo, path: /echo, upstream: echo, websocket: true}}
"""


@dataclass(frozen=True)
class Options:
    messages: int


async def _round_trips(url: str, count: int) -> list[float]:
    """Seconds per round trip, after a short warm-up on the same connection."""
    async with connect(url, compression=None) as ws:
        for _ in range(min(100, count)):
            await ws.send(MESSAGE)
            await ws.recv()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(MESSAGE)
            await ws.recv()
            times.append(time.perf_counter() - started)
    return times


def _micros(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}us"


def run(options: Options) -> int:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ws-")))
        echo_port, gateway_port = free_port(), free_port()
        argv = [sys.executable, "-m", "bench.wsecho"]
        stack.enter_context(
            running(
                "upstream",
                [*argv, "--port", str(echo_port)],
                port=echo_port,
                ready_path="/health",
                url_path="",
                log_dir=work,
            )
        )
        (work / "routes.yaml").write_text(_ROUTES.format(port=echo_port))
        stack.enter_context(
            running(
                "gateway",
                gateway_command(work / "routes.yaml", gateway_port),
                port=gateway_port,
                ready_path=GATEWAY_HEALTH_PATH,
                url_path="",
                log_dir=work,
            )
        )
        print(f"websocket benchmark: {options.messages} sequential 64-byte echoes per target")
        print(f"{'target':<10}{'p50':>10}{'p99':>10}")
        medians = {}
        for name, port, path in (("direct", echo_port, "/"), ("gateway", gateway_port, "/echo")):
            times = asyncio.run(_round_trips(f"ws://127.0.0.1:{port}{path}", options.messages))
            p99 = statistics.quantiles(times, n=100)[98]
            medians[name] = statistics.median(times)
            print(f"{name:<10}{_micros(medians[name]):>10}{_micros(p99):>10}")
    print(f"ratio websocket-gateway/direct-p50={medians['gateway'] / medians['direct']:.3f}")
    return 0
