"""The shadow benchmark: what mirroring every request costs the primary, in one run.

Three gateways route `/search` to the same fast upstream: one with shadowing off, one that
mirrors 100% of requests to a fast candidate, one that mirrors 100% to a candidate 10x
slower than the primary (its delay is ten times the unshadowed gateway's p50 at
saturation). The comparisons and their SQLite store run as in production: in the gateways'
shadow worker processes (`shadow_worker: {mode: process}`; `--mode inline` measures them
in the gateway's own loop instead).

Each round starts with the next gateway in turn (off, fast, slow), so that none of them is
always measured first. The runs of a round:
- saturated: closed loop (every connection sends its next request as soon as it has an
  answer). Throughput here is the capacity; p99 is mostly queueing and follows throughput.
- fixed rate: `--rate` (default 50%) of the unshadowed gateway's saturated throughput in the
  same round, offered by connections that each wait 10 ms after every answer. The latency
  figures here are the client's experience at a load the gateway can carry.

The ratios: `-p99` ones compare the fixed-rate p99 (the `-p99-saturated` ones the
saturated p99), `-rps` ones the saturated throughput. With `--rounds` > 1 each ratio is the
median over the rounds, and the spread (min-max) is printed. Each shadowed run also says
which share of its copies was compared: the rest were dropped (and counted) because the
worker could not keep up on this machine, which shares its cores with everything here, or,
at saturation mostly, because the gateway's loop was busy (its copy budget,
`shadow_worker: busy_limit`, at its default as in production). A run with client errors
prints their kinds: shadowing must never change the client's answer.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import jwt

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.loadgen import LoadResult
from bench.process import Stage, Target, free_port
from bench.proxy import GATEWAY_HEALTH_PATH, WARMUP_SECONDS, gateway_command

PATH = "/search"
ADMIN_SECRET = "bench-shadow-admin-key-0123456789abcdef"  # noqa: S105 (a throwaway bench key)
THINK_SECONDS = 0.010  # fixed-rate runs: each connection's wait after an answer
VARIANTS = ("shadow-fast", "shadow-slow")
_ROUTES = """\
upstreams:
  primary: {{url: "http://127.0.0.1:{primary}", timeout: 5s}}
  candidate: {{url: "http://127.0.0.1:{candidate}", timeout: 5s}}
default: primary
auth:
  default: none
  keys: [{{id: bench, algorithm: HS256, secret: "{secret}"}}]  # for the admin API's report
authz: none
shadow_store: {{url: "sqlite:///{store}"}}
shadow_worker: {{mode: {mode}}}
routes:
  - name: search
    path: {path}
    upstream: primary
{shadow}"""
_SHADOW = """\
    shadow:
      upstream: candidate
      sample: 1.0
      timeout: 5s
"""


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    rounds: int = 1
    rate: float = 0.5  # share of the unshadowed gateway's saturated throughput
    mode: str = "process"


@dataclass(frozen=True)
class Run:
    result: LoadResult
    compared: float | None  # share of this run's copies that were compared


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"shadow benchmark: {name}, {options.duration} s per run after a {WARMUP_SECONDS} s "
        f"warm-up; saturated: {options.connections} connections; fixed rate: "
        f"{options.rate:.0%} of the unshadowed saturated throughput; 100% of requests "
        f"mirrored, comparisons {options.mode}; {options.rounds} round(s)",
        flush=True,
    )
    with ExitStack() as stack:
        stage = Stage(stack, "strangler-shadow-", PATH)
        work, start = stage.work, stage.start

        def gateway(name: str, candidate: int, shadow: str) -> Target:
            routes = work / f"{name}.yaml"
            routes.write_text(
                _ROUTES.format(
                    primary=primary,
                    candidate=candidate,
                    store=work / f"{name}.db",
                    mode=options.mode,
                    path=PATH,
                    secret=ADMIN_SECRET,
                    shadow=shadow,
                )
            )
            port = free_port()
            return start(name, gateway_command(routes, port), port, GATEWAY_HEALTH_PATH)

        def measure(target: Target, connections: int, think: float) -> Run:
            generate(target.url, connections, WARMUP_SECONDS, (), think)
            _copies(target, 0)  # the warm-up's copies taken by the worker: not this run's
            started = time.monotonic()
            result = generate(target.url, connections, options.duration, (), think)
            mirrored, compared = _copies(target, time.monotonic() - started)
            share = compared / mirrored if mirrored else None
            return Run(result, share if target.name != "off" else None)

        primary = free_port()
        start("primary", upstream.command(primary), primary, PATH)
        fast = free_port()
        start("fast-candidate", upstream.command(fast), fast, PATH)
        off = gateway("off", fast, "")
        slow_ms = max(measure(off, options.connections, 0).result.p50 * 10 * 1000, 1.0)
        slow = free_port()
        start("slow-candidate", upstream.command(slow, slow_ms), slow, PATH)
        targets = [
            off,
            gateway("shadow-fast", fast, _SHADOW),
            gateway("shadow-slow", slow, _SHADOW),
        ]
        print(
            f"slow candidate: answers after {slow_ms:.2f} ms (10x the primary's p50 via the "
            "gateway)"
        )
        rounds = []
        for number in range(1, options.rounds + 1):
            # Each round starts with another gateway, so no variant always runs first or last.
            order = targets[number - 1 :] + targets[: number - 1]
            saturated = _sorted({t.name: measure(t, options.connections, 0) for t in order})
            rate = options.rate * saturated["off"].result.requests_per_second
            connections = max(1, round(rate * THINK_SECONDS))
            fixed = _sorted({t.name: measure(t, connections, THINK_SECONDS) for t in order})
            print(
                f"\nround {number}: fixed rate {rate:.0f} req/s offered ({connections} connections)"
            )
            print(_table(saturated, fixed))
            for load, runs in (("saturated", saturated), ("fixed rate", fixed)):
                for name, r in runs.items():
                    if r.result.errors:  # the client's answer must never change (issue 4)
                        print(f"{name} {load}: errors {r.result.describe_errors()}")
            rounds.append(_ratios(saturated, fixed))
    print()
    for ratio in rounds[0]:
        values = [r[ratio] for r in rounds]
        if len(values) > 1:
            print(
                f"{ratio}: median {statistics.median(values):.3f}, "
                f"spread {min(values):.3f}-{max(values):.3f} over {len(values)} rounds"
            )
    for ratio in rounds[0]:
        print(f"ratio {ratio}={statistics.median(r[ratio] for r in rounds):.3f}")
    return 0


def _sorted(runs: dict[str, Run]) -> dict[str, Run]:
    return {name: runs[name] for name in ("off", *VARIANTS)}


def _copies(target: Target, seconds: float) -> tuple[int, int]:
    """(mirrored, compared) in the last `seconds`, from the gateway's own report (which first
    waits for the worker to take every copy sent); (0, 0) when the gateway does not shadow.
    A window, not a difference of totals: the store's retention deletes the oldest rows."""
    window = math.ceil(seconds * 1000)
    url = target.url.removesuffix(PATH) + f"/_strangler/shadow?since={window}ms"
    token = jwt.encode(
        {"sub": "bench", "roles": ["admin"], "exp": int(time.time()) + 600},
        ADMIN_SECRET,
        algorithm="HS256",
        headers={"kid": "bench"},
    )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = httpx.get(url, headers=headers, timeout=30, trust_env=False)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise BenchError(f"{target.name}: could not read its shadow report: {exc}") from exc
    routes = response.json()["routes"]
    return (
        sum(r["mirrored"] for r in routes),
        sum(r["compared"] for r in routes),
    )


def _table(saturated: dict[str, Run], fixed: dict[str, Run]) -> str:
    lines = [
        f"{'target':<12}{'load':<11}{'requests/s':>11}{'p50':>10}{'p99':>10}{'errors':>8}"
        f"{'compared':>10}"
    ]
    for load, runs in (("saturated", saturated), ("fixed rate", fixed)):
        for name, r in runs.items():
            share = "-" if r.compared is None else f"{r.compared:.0%}"
            lines.append(
                f"{name:<12}{load:<11}{r.result.requests_per_second:>11.0f}"
                f"{r.result.p50 * 1000:>8.2f}ms{r.result.p99 * 1000:>8.2f}ms"
                f"{r.result.errors:>8}{share:>10}"
            )
    return "\n".join(lines)


def _ratios(saturated: dict[str, Run], fixed: dict[str, Run]) -> dict[str, float]:
    """The extra ratios first; the four the issue names last, as the output ends with them."""
    ratios = {}
    for variant in VARIANTS:
        ratios[f"{variant}/off-p99-saturated"] = _ratio(
            saturated[variant].result.p99, saturated["off"].result.p99
        )
    for variant in VARIANTS:
        ratios[f"{variant}/off-p99"] = _ratio(fixed[variant].result.p99, fixed["off"].result.p99)
    for variant in VARIANTS:
        ratios[f"{variant}/off-rps"] = _ratio(
            saturated[variant].result.requests_per_second,
            saturated["off"].result.requests_per_second,
        )
    return ratios


def _ratio(value: float, reference: float) -> float:
    if reference <= 0:
        raise BenchError("the unshadowed gateway measured nothing; no ratio can be computed")
    return value / reference
