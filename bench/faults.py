"""The faults benchmark: a failing upstream next to a healthy one, breaker on and off.

One gateway process routes `/healthy` to a fast upstream (``bench.upstream``) and `/flaky`
to ``bench.flaky``. The healthy route is loaded as in ``bench proxy`` (wrk or the Python
generator, keep-alive connections, as fast as it answers); the flaky route gets a steady
paced load (``--rate`` requests a second, open loop, so a faster answer does not mean more
requests). Three runs, each after a warm-up:

    clean              the flaky upstream healthy, the breaker on (the reference)
    faults             the flaky upstream failing ``--share`` of requests (503 after 20 ms,
                       as an overloaded service fails) for the whole measured period
    faults-no-breaker  the same faults, a gateway whose flaky upstream has `breaker: off`

Both gateways keep the default retries (2 attempts, 20% budget). The result: the healthy
route's success rate and p99 with faults against the clean run (goal: p99 at most 1.2x),
and how many requests a second reached the failing upstream with the breaker on vs off.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

from bench import flaky, loadgen, upstream
from bench.errors import BenchError
from bench.loadgen import LoadGenerator, LoadResult
from bench.process import Target, free_port, running
from bench.proxy import GATEWAY_HEALTH_PATH, WARMUP_SECONDS, gateway_command

HEALTHY, FLAKY = "/healthy", "/flaky"
FAIL_DELAY_MS = 20.0
# A short cool-down so the breaker half-opens, probes and reopens within a run.
BREAKER_ON = "{cool_down: 2s}"
_ROUTES = """\
upstreams:
  healthy: {{url: "http://127.0.0.1:{healthy}", timeout: 5s}}
  flaky: {{url: "http://127.0.0.1:{flaky}", timeout: 5s, breaker: {breaker}}}
default: healthy
auth: {{default: none}}
authz: none
routes:
  - {{name: healthy, path: {healthy_path}, upstream: healthy}}
  - {{name: flaky, path: {flaky_path}, upstream: flaky}}
"""
_PACED_TIMEOUT_SECONDS = 2


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    rate: int  # requests a second on the flaky route
    share: float  # of the flaky upstream's requests that fail while faults are on


@dataclass
class Paced:
    """What the paced load on the flaky route got back from the gateway."""

    sent: int = 0
    ok: int = 0
    unavailable: int = 0  # 503: the upstream's own, or the gateway's circuit_open
    other: int = 0  # any other status, or no answer


@dataclass(frozen=True)
class Run:
    name: str
    healthy: LoadResult
    paced: Paced
    reached: int  # requests the flaky upstream received
    failed: int  # of which it failed
    seconds: float

    @property
    def success(self) -> float:
        attempts = self.healthy.requests + self.healthy.errors
        return (self.healthy.requests - self.healthy.errors) / attempts if attempts else 0.0

    @property
    def reached_per_second(self) -> float:
        return self.reached / self.seconds


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"faults benchmark: {name}, {options.connections} connections on {HEALTHY}, "
        f"{options.rate} req/s paced on {FLAKY}, {options.duration} s per run after a "
        f"{WARMUP_SECONDS} s warm-up; faults: {options.share:.0%} of the flaky upstream's "
        f"requests fail (503 after {FAIL_DELAY_MS:.0f} ms)",
        flush=True,
    )
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-faults-")))

        def start(name: str, argv: list[str], port: int, ready: str, path: str) -> Target:
            return stack.enter_context(
                running(name, argv, port=port, ready_path=ready, url_path=path, log_dir=work)
            )

        healthy_port, flaky_port = free_port(), free_port()
        start("healthy", upstream.command(healthy_port), healthy_port, "/", HEALTHY)
        argv = flaky.command(flaky_port, options.share, FAIL_DELAY_MS)
        start("flaky", argv, flaky_port, "/_faults/stats", FLAKY)

        def gateway(name: str, breaker: str) -> Target:
            routes = work / f"{name}.yaml"
            routes.write_text(
                _ROUTES.format(
                    healthy=healthy_port,
                    flaky=flaky_port,
                    breaker=breaker,
                    healthy_path=HEALTHY,
                    flaky_path=FLAKY,
                )
            )
            port = free_port()
            return start(name, gateway_command(routes, port), port, GATEWAY_HEALTH_PATH, HEALTHY)

        with_breaker, without = gateway("breaker-on", BREAKER_ON), gateway("breaker-off", "off")

        def measure(name: str, target: Target, faults: bool) -> Run:
            return _measure(name, target, faults, flaky_port, generate, options)

        runs = [
            measure("clean", with_breaker, False),
            measure("faults", with_breaker, True),
            measure("faults-no-breaker", without, True),
        ]
    print(_table(runs))
    clean, faults, unguarded = runs
    print(f"healthy route success rate with faults: {faults.success:.2%}")
    print(
        f"failing upstream reached: {faults.reached_per_second:.1f} req/s with the breaker, "
        f"{unguarded.reached_per_second:.1f} req/s without"
    )
    print(f"ratio faults/clean-p99={_ratio(faults.healthy.p99, clean.healthy.p99):.3f}")
    print(f"ratio faults/clean-success={_ratio(faults.success, clean.success):.3f}")
    load = _ratio(faults.reached_per_second, unguarded.reached_per_second)
    print(f"ratio breaker-on/off-failing-load={load:.3f}")
    return 0


def _measure(
    name: str,
    target: Target,
    faults: bool,
    flaky_port: int,
    generate: LoadGenerator,
    options: Options,
) -> Run:
    generate(target.url, options.connections, WARMUP_SECONDS, ())
    _control(flaky_port, "/_faults/on" if faults else "/_faults/off")  # also zeroes counts
    flaky_url = target.url.replace(HEALTHY, FLAKY)
    paced = Paced()
    thread = threading.Thread(
        target=lambda: uvloop.run(_paced(flaky_url, options.rate, options.duration, paced))
    )
    thread.start()
    try:
        healthy = generate(target.url, options.connections, options.duration, ())
    finally:
        thread.join()
    counts = json.loads(_control(flaky_port, "/_faults/stats"))
    _control(flaky_port, "/_faults/off")
    return Run(name, healthy, paced, counts["received"], counts["failed"], options.duration)


def _control(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise BenchError(f"the flaky upstream did not answer {path}: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"the flaky upstream answered {path} with {response.status}")
    return body


async def _paced(url: str, rate: int, duration: float, tally: Paced) -> None:
    """`rate` requests a second for `duration` seconds, each sent on time whatever the
    answers before it (open loop); waits for the last answers."""
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=_PACED_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> None:
            try:
                async with session.get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                tally.other += 1
                return
            if status == 200:
                tally.ok += 1
            elif status == 503:
                tally.unavailable += 1
            else:
                tally.other += 1

        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        while (due := start + tally.sent / rate) < start + duration:
            await asyncio.sleep(max(0.0, due - loop.time()))
            task = loop.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tally.sent += 1
        await asyncio.gather(*tasks)


def _table(runs: list[Run]) -> str:
    lines = [
        f"{'run':<19}{'healthy/s':>10}{'p50':>9}{'p99':>9}{'errors':>8}{'success':>9}"
        f"  {'flaky sent':>10}{'200':>7}{'503':>7}{'other':>6}{'reached/s':>10}{'failed':>7}"
    ]
    for r in runs:
        h, p = r.healthy, r.paced
        lines.append(
            f"{r.name:<19}{h.requests_per_second:>10.1f}{h.p50 * 1000:>7.2f}ms"
            f"{h.p99 * 1000:>7.2f}ms{h.errors:>8}{r.success:>9.2%}"
            f"  {p.sent:>10}{p.ok:>7}{p.unavailable:>7}{p.other:>6}"
            f"{r.reached_per_second:>10.1f}{r.failed:>7}"
        )
    return "\n".join(lines)


def _ratio(value: float, reference: float) -> float:
    if reference <= 0:
        raise BenchError("the reference run measured nothing; no ratio can be computed")
    return value / reference
