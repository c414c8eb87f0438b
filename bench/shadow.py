"""The shadow benchmark: what mirroring every request costs the primary, in one run.

Three gateways route `/search` to the same fast upstream: one with shadowing off, one that
mirrors 100% of requests to a fast candidate, one that mirrors 100% to a candidate 10x
slower than the primary (its delay is ten times the primary's measured p50 through the
gateway). Each is loaded the same way; the ratios compare p99 latency and throughput of the
shadowed gateways with the unshadowed one. The comparisons and their SQLite store run in
the gateway process, as in production.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.process import Target, free_port, running
from bench.proxy import GATEWAY_HEALTH_PATH, WARMUP_SECONDS, Measurement, gateway_command, table

PATH = "/search"
_ROUTES = """\
upstreams:
  primary: {{url: "http://127.0.0.1:{primary}", timeout: 5s}}
  candidate: {{url: "http://127.0.0.1:{candidate}", timeout: 5s}}
default: primary
auth: {{default: none}}
authz: none
shadow_store: {{url: "sqlite:///{store}"}}
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


def run(options: Options) -> int:
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"shadow benchmark: {name}, {options.connections} connections, {options.duration} s "
        f"per target after a {WARMUP_SECONDS} s warm-up; 100% of requests mirrored",
        flush=True,
    )
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-shadow-")))

        def start(name: str, argv: list[str], port: int, ready: str, path: str) -> Target:
            return stack.enter_context(
                running(name, argv, port=port, ready_path=ready, url_path=path, log_dir=work)
            )

        def measure(target: Target) -> Measurement:
            generate(target.url, options.connections, WARMUP_SECONDS, ())
            result = generate(target.url, options.connections, options.duration, ())
            return Measurement(target.name, result)

        def gateway(name: str, candidate: int, shadow: str) -> Target:
            routes = work / f"{name}.yaml"
            routes.write_text(
                _ROUTES.format(
                    primary=primary,
                    candidate=candidate,
                    store=work / f"{name}.db",
                    path=PATH,
                    shadow=shadow,
                )
            )
            port = free_port()
            return start(name, gateway_command(routes, port), port, GATEWAY_HEALTH_PATH, PATH)

        primary = free_port()
        start("primary", upstream.command(primary), primary, PATH, PATH)
        fast = free_port()
        start("fast-candidate", upstream.command(fast), fast, PATH, PATH)
        off = measure(gateway("off", fast, ""))
        slow_ms = max(off.result.p50 * 10 * 1000, 1.0)
        slow = free_port()
        start("slow-candidate", upstream.command(slow, slow_ms), slow, PATH, PATH)
        measurements = [
            off,
            measure(gateway("shadow-fast", fast, _SHADOW)),
            measure(gateway("shadow-slow", slow, _SHADOW)),
        ]
    print(table(measurements))
    print(f"slow candidate: answers after {slow_ms:.2f} ms (10x the primary's p50 via the gateway)")
    by = {m.target: m.result for m in measurements}
    for variant in ("shadow-fast", "shadow-slow"):
        print(f"ratio {variant}/off-p99={_ratio(by[variant].p99, by['off'].p99):.3f}")
    for variant in ("shadow-fast", "shadow-slow"):
        rps = _ratio(by[variant].requests_per_second, by["off"].requests_per_second)
        print(f"ratio {variant}/off-rps={rps:.3f}")
    return 0


def _ratio(value: float, reference: float) -> float:
    if reference <= 0:
        raise BenchError("the unshadowed gateway measured nothing; no ratio can be computed")
    return value / reference
