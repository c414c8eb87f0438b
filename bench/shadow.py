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

Each fixed-rate run also says where the CPU went, in microseconds per request (utime +
stime from /proc/PID/stat): the gateway's own, the time its event loop's thread waited for a
core (/proc/PID/schedstat: the CPU the others took from it when it had work), its shadow
worker process's and the candidate's. `--separate` adds `shadow-sink`: 100% mirrored to a
worker that acknowledges every copy and compares nothing (bench/shadow_sink.py), so its
`-p99` ratio is the gateway's own cost of mirroring, and the rest of `shadow-fast`'s is the
CPU the worker and the candidate take on the cores the gateway shares.

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
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

from bench import loadgen, upstream
from bench.breakdown import cpu_seconds
from bench.errors import BenchError
from bench.loadgen import LoadResult
from bench.process import Stage, Target, free_port
from bench.proxy import GATEWAY_HEALTH_PATH, WARMUP_SECONDS, gateway_command

PATH = "/search"
ADMIN_SECRET = "bench-shadow-admin-key-0123456789abcdef"  # noqa: S105 (a throwaway bench key)
THINK_SECONDS = 0.010  # fixed-rate runs: each connection's wait after an answer
VARIANTS = ("shadow-fast", "shadow-slow")
SINK = "shadow-sink"  # --separate: copies sent to bench/shadow_sink.py, compared by no one
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
    separate: bool = False  # add shadow-sink: the gateway's own cost of mirroring


@dataclass(frozen=True)
class Cpu:
    """Where the CPU went in one run, in microseconds per request (None: no such process)."""

    gateway: float  # the gateway process's own
    waited: float  # its event loop's thread, runnable but without a core
    worker: float | None  # its shadow worker process (or the sink)
    candidate: float | None  # the candidate it asks


@dataclass(frozen=True)
class Candidate:
    port: int
    pid: int


@dataclass(frozen=True)
class Run:
    result: LoadResult
    compared: float | None  # share of this run's copies that were compared
    cpu: Cpu


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    variants = (*VARIANTS, SINK) if options.separate else VARIANTS
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

        def gateway(name: str, candidate: Candidate, shadow: str = _SHADOW) -> Target:
            """`candidate` is asked unless `shadow` is empty or the worker is the sink."""
            routes = work / f"{name}.yaml"
            routes.write_text(
                _ROUTES.format(
                    primary=primary,
                    candidate=candidate.port,
                    store=work / f"{name}.db",
                    mode=options.mode,
                    path=PATH,
                    secret=ADMIN_SECRET,
                    shadow=shadow,
                )
            )
            port = free_port()
            argv = gateway_command(routes, port)
            if name == SINK:  # the same gateway, its worker process the sink
                launcher = [sys.executable, "-m", "bench.breakdown_gateway", "--off", "comparisons"]
                argv = [*launcher, *argv[argv.index("serve") + 1 :]]
            asked[name] = candidate.pid if shadow and name != SINK else None  # for its CPU
            return start(name, argv, port, GATEWAY_HEALTH_PATH)

        def measure(target: Target, connections: int, think: float) -> Run:
            generate(target.url, connections, WARMUP_SECONDS, (), think)
            _copies(target, 0)  # the warm-up's copies taken by the worker: not this run's
            before = _usage(target.pid, asked[target.name])
            started = time.monotonic()
            result = generate(target.url, connections, options.duration, (), think)
            cpu = _per_request(before, _usage(target.pid, asked[target.name]), result.requests)
            mirrored, compared = _copies(target, time.monotonic() - started)
            share = compared / mirrored if mirrored else None
            return Run(result, share if target.name != "off" else None, cpu)

        asked: dict[str, int | None] = {}  # gateway -> the candidate process it asks
        primary = free_port()
        start("primary", upstream.command(primary), primary, PATH)
        fast = _candidate(start, 0.0)
        off = gateway("off", fast, "")
        slow_ms = max(measure(off, options.connections, 0).result.p50 * 10 * 1000, 1.0)
        slow = _candidate(start, slow_ms)
        targets = [off, gateway("shadow-fast", fast), gateway("shadow-slow", slow)]
        if options.separate:
            targets.append(gateway(SINK, fast))
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
            print(_cpu_table(fixed))
            for load, runs in (("saturated", saturated), ("fixed rate", fixed)):
                for name, r in runs.items():
                    if r.result.errors:  # the client's answer must never change (issue 4)
                        print(f"{name} {load}: errors {r.result.describe_errors()}")
            rounds.append(_ratios(saturated, fixed, variants))
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
    return {name: runs[name] for name in ("off", *VARIANTS, SINK) if name in runs}


def _candidate(start: Callable[[str, list[str], int, str], Target], delay_ms: float) -> Candidate:
    """A candidate upstream answering after `delay_ms`."""
    port = free_port()
    name = "slow-candidate" if delay_ms else "fast-candidate"
    return Candidate(port, start(name, upstream.command(port, delay_ms), port, PATH).pid)


_Usage = tuple[float, float, float | None, float | None]


def _usage(gateway: int, candidate: int | None) -> _Usage:
    """CPU seconds so far: the gateway's, its thread's wait for a core, its children's (the
    shadow worker) and the candidate's (None: no worker, no candidate asked)."""
    try:
        waited = int(Path(f"/proc/{gateway}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError) as exc:
        raise BenchError(f"cannot read the scheduler statistics of {gateway}: {exc!r}") from exc
    children = _children(gateway)
    worker = sum(cpu_seconds(pid) for pid in children) if children else None
    return (
        cpu_seconds(gateway),
        waited,
        worker,
        None if candidate is None else cpu_seconds(candidate),
    )


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (/proc/PID/stat's field 4)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _per_request(before: _Usage, after: _Usage, requests: int) -> Cpu:
    def micros(first: float | None, last: float | None) -> float | None:
        if first is None or last is None:
            return None
        return (last - first) / max(requests, 1) * 1e6

    gateway, waited = micros(before[0], after[0]), micros(before[1], after[1])
    assert gateway is not None and waited is not None
    return Cpu(gateway, waited, micros(before[2], after[2]), micros(before[3], after[3]))


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


def _cpu_table(fixed: dict[str, Run]) -> str:
    lines = [
        f"{'fixed rate':<12}{'us/request:':<11}{'gateway':>11}{'waited':>10}{'worker':>10}"
        f"{'candidate':>11}"
    ]
    for name, r in fixed.items():
        cpu = r.cpu
        worker = "-" if cpu.worker is None else f"{cpu.worker:.0f}"
        candidate = "-" if cpu.candidate is None else f"{cpu.candidate:.0f}"
        lines.append(
            f"{name:<12}{'':<11}{cpu.gateway:>11.0f}{cpu.waited:>10.0f}{worker:>10}{candidate:>11}"
        )
    return "\n".join(lines)


def _ratios(
    saturated: dict[str, Run], fixed: dict[str, Run], variants: tuple[str, ...]
) -> dict[str, float]:
    """The extra ratios first; the four the issue names last, as the output ends with them."""
    ratios = {}
    for variant in variants:
        ratios[f"{variant}/off-p99-saturated"] = _ratio(
            saturated[variant].result.p99, saturated["off"].result.p99
        )
    for variant in variants:
        ratios[f"{variant}/off-p99"] = _ratio(fixed[variant].result.p99, fixed["off"].result.p99)
    for variant in variants:
        ratios[f"{variant}/off-rps"] = _ratio(
            saturated[variant].result.requests_per_second,
            saturated["off"].result.requests_per_second,
        )
    return ratios


def _ratio(value: float, reference: float) -> float:
    if reference <= 0:
        raise BenchError("the unshadowed gateway measured nothing; no ratio can be computed")
    return value / reference
