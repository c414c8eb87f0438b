"""`bench proxy --workers N`: the plain gateway with one worker and with N, in one run.

The same routes (``bench.proxy``'s plain route) and the same upstream serve both; the same
load generator measures each after a warm-up. Printed: the table, where the CPU went during
each measurement (the gateway's processes, the upstream, the load generator and the other
processes of the machine, in cores, read from /proc and getrusage), how the N workers
shared the requests (from the gateway's own /metrics, which gathers every worker's
counts), and ``ratio gateway-Nw/gateway-1w=``.

The load generator and the upstream run on the same machine. With more CPUs than workers,
the gateway is pinned to the first N CPUs and the upstream and the load generator to the
rest (sched_setaffinity; children inherit it), so they do not take the workers' CPU time.
With N or fewer CPUs (two workers on two cores) they cannot be kept apart: nothing is
pinned, and the CPU lines say how much of the machine the upstream, wrk and any other
process took, which bounds the ratio (N workers can have at most the CPUs the others leave).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen, upstream
from bench.loadgen import LoadGenerator
from bench.process import Stage, Target, free_port
from bench.proxy import (
    BENCH_PATH,
    GATEWAY_HEALTH_PATH,
    WARMUP_SECONDS,
    Measurement,
    gateway_command,
    plain_routes,
    ratio,
    require_no_errors,
    table,
)

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    workers: int


@dataclass(frozen=True)
class Cpu:
    """CPU time during one measurement, in cores (CPU seconds per second)."""

    gateway: float
    upstream: float
    load: float
    machine: float  # every process's, these included (/proc/stat)
    stolen: float  # by the hypervisor: time the CPUs wanted to run and could not

    @property
    def others(self) -> float:
        """What processes outside the benchmark took (a busy machine)."""
        return max(0.0, self.machine - self.gateway - self.upstream - self.load)


def _process_seconds(pid: int) -> float:
    """utime + stime of `pid` and its children's threads so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _tree(pid: int) -> list[int]:
    """`pid` and its children (the gateway's workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def _machine_seconds() -> tuple[float, float]:
    """CPU seconds every CPU spent busy so far, and those stolen by the hypervisor (a VM's
    neighbours): /proc/stat's first line."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(ticks[:7]) - ticks[3] - ticks[4]  # user nice system irq softirq
    return busy / _TICKS, ticks[7] / _TICKS


def _load_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
    return usage.ru_utime + usage.ru_stime


def measure(
    generate: LoadGenerator, target: Target, upstream_pid: int, options: Options
) -> tuple[Measurement, Cpu]:
    generate(target.url, options.connections, WARMUP_SECONDS, target.headers)
    pids = _tree(target.pid)

    def now() -> tuple[float, ...]:
        gateway = sum(map(_process_seconds, pids))
        return gateway, _process_seconds(upstream_pid), _load_seconds(), *_machine_seconds()

    before, started = now(), time.monotonic()
    result = generate(target.url, options.connections, options.duration, target.headers)
    elapsed = time.monotonic() - started
    cpu = Cpu(*((b - a) / elapsed for a, b in zip(before, now(), strict=True)))
    return Measurement(target.name, result), cpu


def per_worker(target: Target) -> dict[str, float]:
    """worker -> requests it answered on the bench route, from one scrape."""
    url = target.url.removesuffix(BENCH_PATH) + "/metrics"
    text = httpx.get(url, timeout=10, trust_env=False).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "strangler_requests_total" and s.labels.get("route") == "bench":
                worker = s.labels.get("worker", "0")
                counts[worker] = counts.get(worker, 0) + s.value
    return counts


def _pinning(workers: int) -> tuple[list[str], set[int] | None, str]:
    """(the gateway's argv prefix, the CPUs of the rest, a line that says what was done)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= workers:
        return (
            [],
            None,
            (
                f"not pinned: {len(cpus)} CPUs for {workers} workers, the upstream and the load "
                "generator"
            ),
        )
    gateway, rest = cpus[:workers], set(cpus[workers:])
    listed = ",".join(map(str, gateway))
    return (
        ["taskset", "-c", listed],
        rest,
        f"gateway pinned to CPUs {listed}, upstream and load generator to {sorted(rest)}",
    )


@contextmanager
def _targets(options: Options) -> Iterator[tuple[list[Target], int, str]]:
    prefix, rest, pinned = _pinning(options.workers)
    with ExitStack() as stack:
        if rest is not None:  # the upstream and wrk (started later, by this process) inherit
            previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, rest)
            stack.callback(os.sched_setaffinity, 0, previous)
        stage = Stage(stack, "strangler-bench-workers-", BENCH_PATH)
        upstream_port = free_port()
        backend = stage.start("upstream", upstream.command(upstream_port), upstream_port, "/")
        routes = stage.work / "routes.yaml"
        routes.write_text(plain_routes(upstream_port))
        targets = []
        for name, count in (("gateway-1w", 1), (f"gateway-{options.workers}w", options.workers)):
            port = free_port()
            argv = [*prefix, *gateway_command(routes, port), "--workers", str(count)]
            targets.append(stage.start(name, argv, port, GATEWAY_HEALTH_PATH))
        yield targets, backend.pid, pinned


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    with _targets(options) as (targets, upstream_pid, pinned):
        print(
            f"workers benchmark: {name}, {options.connections} connections, "
            f"{options.duration} s per target after a {WARMUP_SECONDS} s warm-up; {pinned}",
            flush=True,
        )
        measured = [measure(generate, target, upstream_pid, options) for target in targets]
        shares = per_worker(targets[-1])
    measurements = [m for m, _ in measured]
    print(table(measurements))
    for m, cpu in measured:
        print(
            f"cpu {m.target}: gateway {cpu.gateway:.2f}, upstream {cpu.upstream:.2f}, "
            f"load generator {cpu.load:.2f}, other processes {cpu.others:.2f} cores; "
            f"stolen by the hypervisor {cpu.stolen:.2f}"
        )
    total = sum(shares.values()) or 1
    split = ", ".join(f"{w}: {n / total:.0%}" for w, n in sorted(shares.items()))
    print(f"{targets[-1].name} requests per worker (warm-up included): {split}")
    require_no_errors(measurements)
    one, many = measurements[0].result, measurements[1].result
    cpu_many = measured[1][1]
    per_core = [m.result.requests_per_second / max(c.gateway, 1e-9) for m, c in measured]
    print(
        f"requests/s per gateway core: {per_core[0]:.0f} (1 worker), {per_core[1]:.0f} "
        f"({options.workers} workers); the gateway had {cpu_many.gateway:.2f} of "
        f"{os.cpu_count()} CPUs, the upstream and the load generator "
        f"{cpu_many.upstream + cpu_many.load:.2f}, other processes {cpu_many.others:.2f}"
    )
    print(f"ratio {measurements[1].target}/gateway-1w={ratio(many, one):.3f}")
    # the same per core the gateway got: how well the workers scale on the CPU they had
    print(f"ratio {measurements[1].target}/gateway-1w-per-core={per_core[1] / per_core[0]:.3f}")
    return 0
