"""The faults benchmark: a failing upstream next to a healthy one, breaker on and off.

One gateway process routes `/healthy` to a fast upstream (``bench.upstream``) and `/flaky`
to ``bench.flaky``. The healthy route is loaded as in ``bench proxy`` (wrk or the Python
generator, keep-alive connections, as fast as it answers); the flaky route gets a steady
paced load (``--rate`` requests a second, open loop, so a faster answer does not mean more
requests). Three runs, each on a fresh gateway after a warm-up:

    clean              the flaky upstream healthy, the breaker on (the reference)
    faults             the flaky upstream failing ``--share`` of requests (503 after 20 ms,
                       as an overloaded service fails) for the whole measured period
    faults-no-breaker  the same faults, a gateway whose flaky upstream has `breaker: off`

With ``--rounds`` > 1 the three runs are repeated, each round starting with the next run in
turn, and every ratio is the median over the rounds (its spread, min-max, is printed too): on
a small machine shared with other work a single run's p99 moves by more than the effect.

Both gateways keep the default retries (2 attempts, 20% budget). The result: the healthy
route's success rate and p99 with faults against the clean run (goal: p99 at most 1.2x),
its throughput with faults against the clean run's (goal: at least 0.9x), and how many
requests a second reached the failing upstream with the breaker on vs off.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import flaky, loadgen, upstream
from bench.errors import BenchError
from bench.loadgen import LoadGenerator, LoadResult, Paced
from bench.process import Target, free_port, running
from bench.proxy import GATEWAY_HEALTH_PATH, WARMUP_SECONDS, gateway_command

HEALTHY, FLAKY = "/healthy", "/flaky"
FAIL_DELAY_MS = 20.0
# A short cool-down so the breaker half-opens, probes and reopens within a run.
BREAKER_ON = "{cool_down: 2s}"
# (name, the flaky upstream's breaker, faults on) of the three runs of a round
RUNS = [
    ("clean", BREAKER_ON, False),
    ("faults", BREAKER_ON, True),
    ("faults-no-breaker", "off", True),
]
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


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    rate: int  # requests a second on the flaky route
    share: float  # of the flaky upstream's requests that fail while faults are on
    rounds: int = 1


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

        def start(
            stack: ExitStack, name: str, argv: list[str], port: int, ready: str, path: str
        ) -> Target:
            return stack.enter_context(
                running(name, argv, port=port, ready_path=ready, url_path=path, log_dir=work)
            )

        healthy_port, flaky_port = free_port(), free_port()
        start(stack, "healthy", upstream.command(healthy_port), healthy_port, "/", HEALTHY)
        argv = flaky.command(flaky_port, options.share, FAIL_DELAY_MS)
        start(stack, "flaky", argv, flaky_port, "/_faults/stats", FLAKY)

        def measure(name: str, breaker: str, faults: bool) -> Run:
            # A gateway of its own per run, stopped after it: a breaker's window must not
            # start out holding another run's calls, and an idle gateway takes no CPU.
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
            with ExitStack() as own:
                argv = gateway_command(routes, port)
                target = start(own, name, argv, port, GATEWAY_HEALTH_PATH, HEALTHY)
                return _measure(name, target, faults, flaky_port, generate, options)

        rounds = []
        for number in range(options.rounds):
            # Each round starts with the next run in turn, so none is always measured first.
            turn = RUNS[number % len(RUNS) :] + RUNS[: number % len(RUNS)]
            runs = {name: measure(name, breaker, faults) for name, breaker, faults in turn}
            if options.rounds > 1:
                print(f"round {number + 1}:")
            print(_table([runs[name] for name, _, _ in RUNS]), flush=True)
            rounds.append(runs)
    successes = [r["faults"].success for r in rounds]
    print(f"healthy route success rate with faults: {statistics.median(successes):.2%}")
    with_breaker = statistics.median(r["faults"].reached_per_second for r in rounds)
    without = statistics.median(r["faults-no-breaker"].reached_per_second for r in rounds)
    print(
        f"failing upstream reached: {with_breaker:.1f} req/s with the breaker, "
        f"{without:.1f} req/s without"
    )
    ratios = [_ratios(r["clean"], r["faults"], r["faults-no-breaker"]) for r in rounds]
    if options.rounds > 1:
        for ratio in ratios[0]:
            values = [r[ratio] for r in ratios]
            print(
                f"{ratio}: median {statistics.median(values):.3f}, "
                f"spread {min(values):.3f}-{max(values):.3f} over {len(values)} rounds"
            )
    for ratio in ratios[0]:
        print(f"ratio {ratio}={statistics.median(r[ratio] for r in ratios):.3f}")
    return 0


def _ratios(clean: Run, faults: Run, unguarded: Run) -> dict[str, float]:
    return {
        "faults/clean-p99": _ratio(faults.healthy.p99, clean.healthy.p99),
        "faults/clean-rps": _ratio(
            faults.healthy.requests_per_second, clean.healthy.requests_per_second
        ),
        "faults/clean-success": _ratio(faults.success, clean.success),
        "breaker-on/off-failing-load": _ratio(
            faults.reached_per_second, unguarded.reached_per_second
        ),
    }


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
        target=loadgen.run_paced, args=(flaky_url, options.rate, options.duration, paced)
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
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)
    except httpx.TransportError as exc:
        raise BenchError(f"the flaky upstream did not answer {path}: {exc}") from exc
    if response.status_code != 200:
        raise BenchError(f"the flaky upstream answered {path} with {response.status_code}")
    return response.content


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
            f"  {p.sent:>10}{p.statuses[200]:>7}{p.statuses[503]:>7}"
            f"{p.sent - p.statuses[200] - p.statuses[503]:>6}"
            f"{r.reached_per_second:>10.1f}{r.failed:>7}"
        )
    return "\n".join(lines)


def _ratio(value: float, reference: float) -> float:
    if reference <= 0:
        raise BenchError("the reference run measured nothing; no ratio can be computed")
    return value / reference
