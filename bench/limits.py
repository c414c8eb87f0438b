"""The rate-limit benchmark: what a rate-limited route costs on each store, in one run.

Three gateways route `/bench` to the same fast upstream: one without a limit, one with a
token-bucket limit in memory, one with the same limit in Redis (a redis-server of the
bench's own, on loopback, without persistence). The limit is far above what the run can
reach, so every request is checked and none is refused: the difference is the check.
Each is loaded the same way; the ratios compare throughput with the unlimited gateway, and
the per-request cost is the difference of the mean service times on the one worker.

A second measurement isolates the Redis adapter: sequential checks (one Lua script each,
via redis-py's asyncio client) against sequential PINGs on the same connection, the
cheapest round trip the client can make.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import uvloop

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.process import STARTUP_DEADLINE_SECONDS, Stage, Target, free_port
from bench.proxy import (
    BENCH_PATH,
    GATEWAY_HEALTH_PATH,
    WARMUP_SECONDS,
    gateway_command,
    measure,
    ratio,
    require_no_errors,
    table,
    worker_micros,
)
from gateway.config.limits import RateLimitSettings, StoreSettings
from gateway.limits.ratelimit import RedisRateLimiter
from gateway.limits.store import RedisStore, StoreHealth

_ROUTES = """\
upstreams:
  backend: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
auth: {{default: none}}
authz: none
{store}routes:
  - name: bench
    path: {path}
    upstream: backend
{limit}"""
# Never reached in a run: every request is counted, none refused.
_LIMIT = "    rate_limit: {limit: 1000000, window: 1s}\n"
_RULE = RateLimitSettings(limit=1_000_000, window=1)
CHECKS = 5000


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A redis-server of the bench's own on a free loopback port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    log = (workdir / "redis.log").open("wb")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    child = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while True:
            try:
                client.ping()
                break
            except redis.RedisError as exc:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise BenchError(f"redis-server did not start: {exc}") from exc
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        child.terminate()
        child.wait()
        log.close()


async def _per_call(url: str) -> tuple[float, float]:
    """Mean seconds of one PING and of one rate-limit check, each run CHECKS times."""
    store = RedisStore(StoreSettings("redis", url, timeout=1.0), StoreHealth("redis"))
    limiter = RedisRateLimiter(store)
    try:
        await store.client.ping()
        await limiter.hit("warm", _RULE)
        started = time.perf_counter()
        for _ in range(CHECKS):
            await store.client.ping()
        ping = (time.perf_counter() - started) / CHECKS
        started = time.perf_counter()
        for _ in range(CHECKS):
            await limiter.hit("bench", _RULE)
        check = (time.perf_counter() - started) / CHECKS
    finally:
        await store.close()
    return ping, check


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"rate-limit benchmark: {name}, {options.connections} connections, {options.duration} s "
        f"per target after a {WARMUP_SECONDS} s warm-up; every request checked, none refused",
        flush=True,
    )
    with ExitStack() as stack:
        stage = Stage(stack, "strangler-limits-", BENCH_PATH)
        work, start = stage.work, stage.start
        redis_url = stack.enter_context(redis_server(work))

        def gateway(name: str, store: str, limit: str) -> Target:
            routes = work / f"{name}.yaml"
            routes.write_text(
                _ROUTES.format(port=backend, store=store, path=BENCH_PATH, limit=limit)
            )
            port = free_port()
            return start(name, gateway_command(routes, port), port, GATEWAY_HEALTH_PATH)

        backend = free_port()
        start("upstream", upstream.command(backend), backend, BENCH_PATH)
        redis_store = f'store: {{backend: redis, url: "{redis_url}"}}\n'
        measurements = [
            measure(generate, gateway(name, store, limit), options.connections, options.duration)
            for name, store, limit in (
                ("plain", "", ""),
                ("rl-memory", "", _LIMIT),
                ("rl-redis", redis_store, _LIMIT),
            )
        ]
        ping, check = uvloop.run(_per_call(redis_url))
    print(table(measurements))
    by = {m.target: m.result for m in measurements}
    for variant in ("rl-memory", "rl-redis"):
        extra = worker_micros(by[variant], by["plain"])
        print(f"{variant}: {extra:+.1f} us of the worker's time per request")
    print(f"redis adapter: {check * 1e6:.1f} us per check, {ping * 1e6:.1f} us per PING")
    for variant in ("rl-memory", "rl-redis"):
        print(f"ratio {variant}/plain-rps={ratio(by[variant], by['plain']):.3f}")
    print(f"ratio redis-check/redis-ping={check / ping:.3f}")
    require_no_errors(measurements)
    return 0
