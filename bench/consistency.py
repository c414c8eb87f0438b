"""The read-your-writes benchmark: what the feature costs a route's reads, in one run.

Gateways route `GET /bench` to the same fast upstream, named `fed` (a CDC-fed new service)
in routes.yaml; the monolith is another name for the same upstream (but in position mode,
where it is a small server answering the one write with a commit position), so a pinned
read costs the same exchange and only the gateway's work differs. Each is loaded the same way, as a
returning browser (the sticky cookie sent: that is the user); the ratios compare throughput
with the gateway without `read_your_writes:`:

- `ryw`: the section on, nobody pinned (the in-memory store is empty: no lookup at all);
- `ryw-other`: another user is pinned, so every read computes its user and looks it up;
- `ryw-pinned`: the loaded user is pinned (window mode): every read goes to the monolith;
- `ryw-released`: position mode, the loaded user pinned at a position the bridge's
  `cdc_positions` already covers: every read checks the positions and goes through, while
  the gateway reads the positions database every 100 ms in the background;
- `ryw-redis`: pins in Redis (a redis-server of the bench's own), nobody pinned: one
  HGETALL per read.

Before each run the pins are made by one POST through the gateway to the monolith (a small
HTTP server in this process answering with X-Strangler-Commit-Position), and one read
checks that the pin does what the variant says.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import uvloop

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.limits import redis_server
from bench.process import STARTUP_DEADLINE_SECONDS, Target, free_port, running
from bench.proxy import (
    BENCH_PATH,
    GATEWAY_HEALTH_PATH,
    RETURNING,
    WARMUP_SECONDS,
    gateway_command,
    measure,
    ratio,
    require_no_errors,
    table,
    worker_micros,
)
from gateway.base.types import Message
from gateway.config.limits import StoreSettings
from gateway.config.table import parse
from gateway.identity.guard import Access
from gateway.limits.gate import Limits
from gateway.rollout.consistency import Consistency
from gateway.rollout.pins import ANY

_ROUTES = """\
upstreams:
  monolith: {{url: "http://127.0.0.1:{monolith}", timeout: 5s}}
  fed: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: monolith
auth: {{default: none}}
authz: none
{extra}routes:
  - name: bench
    path: {path}
    methods: [GET]
    upstream: fed
"""
OTHER = (("Cookie", "strangler_sticky=" + "fedcba9876543210" * 2),)
CALLS = 20_000
VARIANTS = ("ryw", "ryw-other", "ryw-pinned", "ryw-released", "ryw-redis")


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str


class _Writes(BaseHTTPRequestHandler):
    """The monolith's writes: 201 with the commit position the positions table covers."""

    def do_POST(self) -> None:
        self.send_response(201)
        self.send_header("X-Strangler-Commit-Position", "public.products=5")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def _write_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Writes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _positions_db(path: Path) -> str:
    """A database as the bridge leaves it: public.products applied up to position 10."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE cdc_positions (topic TEXT PRIMARY KEY, position TEXT,"
            " source_ts_ms INTEGER, applied_at TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT INTO cdc_positions VALUES ('legacy.public.products', ?, 0, ?)",
            (f"{10:016x}/{10:016x}", "2026-01-01T00:00:00"),
        )
    return f"sqlite:///{path}"


def _request(port: int, method: str, path: str, headers: tuple[tuple[str, str], ...]) -> str:
    """Who answered (X-Strangler-Upstream)."""
    url = f"http://127.0.0.1:{port}{path}"
    response = httpx.request(method, url, headers=headers, timeout=5, trust_env=False)
    return response.headers.get("x-strangler-upstream") or "?"


def _check(variant: str, port: int, expected: str) -> None:
    """The loaded user's read is answered by `expected` (in position mode once the gateway
    has read the positions, which it starts doing at the write)."""
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while (answered := _request(port, "GET", BENCH_PATH, RETURNING)) != expected:
        if time.monotonic() > deadline:
            raise BenchError(f"{variant}: a read was answered by {answered}, not {expected}")
        time.sleep(0.05)


async def _per_call(routes: str) -> dict[str, float]:
    """Microseconds per `Consistency.route` call for a read, in this process, per case."""
    routing = parse(routes.encode(), "bench.yaml")
    settings = routing.read_your_writes
    assert settings is not None
    route, fed = routing.routes[0], routing.upstreams["fed"]
    consistency = Consistency(Limits(StoreSettings()))
    anonymous = Access(None, None, 0.0)  # the returning browser of the HTTP runs
    cookie = [(name.lower().encode(), value.encode()) for name, value in RETURNING]
    scope = {"type": "http", "method": "GET", "headers": cookie, "client": ("127.0.0.1", 1)}

    async def send(message: Message) -> None:
        return None

    async def per_call() -> float:
        started = time.perf_counter()
        for _ in range(CALLS):
            await consistency.route(routing, route, fed, scope, anonymous, send)
        return (time.perf_counter() - started) / CALLS * 1e6

    timings = {"nobody pinned": await per_call()}
    await consistency.memory.add("sub:someone-else", {ANY: 0}, 3600)
    timings["another user pinned"] = await per_call()
    reader = RETURNING[0][1].removeprefix("strangler_sticky=")
    await consistency.memory.add(f"c:{reader}", {ANY: 0}, 3600)
    timings["the reader pinned"] = await per_call()
    return timings


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"read-your-writes benchmark: {name}, {options.connections} connections, "
        f"{options.duration} s per target after a {WARMUP_SECONDS} s warm-up",
        flush=True,
    )
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-ryw-")))
        redis_url = stack.enter_context(redis_server(work))
        monolith = stack.enter_context(_write_server())
        positions = _positions_db(work / "search.db")
        backend = free_port()
        stack.enter_context(
            running(
                "upstream",
                upstream.command(backend),
                port=backend,
                ready_path=BENCH_PATH,
                url_path=BENCH_PATH,
                log_dir=work,
            )
        )
        window = "  window: 1h\n  upstreams: {fed: {}}\n"
        sections = {
            "plain": "",
            "ryw": "read_your_writes:\n" + window,
            "ryw-other": "read_your_writes:\n" + window,
            "ryw-pinned": "read_your_writes:\n" + window,
            "ryw-released": (
                "read_your_writes:\n  mode: position\n  window: 1h\n"
                f"  upstreams: {{fed: {{positions: '{positions}'}}}}\n"
            ),
            "ryw-redis": f'store: {{backend: redis, url: "{redis_url}"}}\nread_your_writes:\n'
            + window,
        }
        # who writes first (a cookie), and who must answer the loaded user's reads then
        setup = {
            "ryw-other": (OTHER, "fed"),
            "ryw-pinned": (RETURNING, "monolith"),
            "ryw-released": (RETURNING, "fed"),
        }
        measurements = []
        for variant, section in sections.items():
            routes = work / f"{variant}.yaml"
            # Only position mode needs a monolith that says where its write committed; the
            # others write to the fast upstream too, so pinned reads cost the same exchange.
            writes = monolith if variant == "ryw-released" else backend
            routes.write_text(
                _ROUTES.format(monolith=writes, port=backend, extra=section, path=BENCH_PATH)
            )
            port = free_port()
            target: Target = stack.enter_context(
                running(
                    variant,
                    gateway_command(routes, port),
                    port=port,
                    ready_path=GATEWAY_HEALTH_PATH,
                    url_path=BENCH_PATH,
                    log_dir=work,
                    headers=RETURNING,
                )
            )
            writer, expected = setup.get(variant, (None, "fed"))
            if writer is not None:
                _request(port, "POST", "/write", writer)
            _check(variant, port, expected)
            measurements.append(measure(generate, target, options.connections, options.duration))
    print(table(measurements))
    plain_routes = _ROUTES.format(monolith=1, port=2, extra=sections["ryw"], path=BENCH_PATH)
    for case, micros in uvloop.run(_per_call(plain_routes)).items():
        print(f"in process, a read's check, {case}: {micros:.2f} us")
    by = {m.target: m.result for m in measurements}
    for variant in VARIANTS:
        extra = worker_micros(by[variant], by["plain"])
        print(f"{variant}: {extra:+.1f} us of the worker's time per request")
    for variant in VARIANTS:
        print(f"ratio {variant}/plain-rps={ratio(by[variant], by['plain']):.3f}")
    require_no_errors(measurements)
    return 0
