"""``bench proxy --breakdown``: what each feature layer costs the gateway, in microseconds of
its own CPU per request, every layer off in turn in one run.

One upstream (``bench.upstream``) answers every name of routes.yaml. The benched request is
``GET /search`` with an RS256 token, on a route with every layer on ("all-on"):

- ``auth``: the token verified (token cache on) and the embedded policy asked (decision
  cache 5 s), as ``bench proxy``'s ``auth`` target; off: ``auth: {default: none}``,
  ``authz: none``.
- ``limits``: a rate limit on the route in the memory store, far above what a run reaches
  (every request counted, none refused); off: no ``rate_limit``.
- ``shadow``: a ``shadow:`` section with ``sample: 0.001``, so the sampling check runs on
  every request and about one in a thousand is copied (the copy goes to the shadow worker
  process, whose CPU is not the gateway's); off: no section.
- ``ryw``: ``read_your_writes:`` in window mode, the route's upstream CDC-fed, and another
  user pinned by a write before the run: every read computes its user and looks the pin up
  (the case ``bench ryw`` calls ``ryw-other``); off: no section.
- ``access-log``: one JSON line per request, to the gateway's log file; off:
  ``--no-access-log``.
- ``metrics`` and ``resilience`` have no switch: bench.breakdown_gateway builds the same app
  with null collaborators (the record stage counts nothing; the forward stage asks the pool
  directly).

The variants are "all-on", one "no-LAYER" per layer, and "bare" (every layer off: the plain
forward). All gateways run side by side; each is measured saturated with the same load after
a warm-up, in alternating order over ``--rounds`` rounds (the medians are kept). A gateway's
CPU is its process's utime + stime (/proc/PID/stat) over the measured window, divided by the
requests the load generator completed in it. The machine's busy time (/proc/stat) less the
bench's own processes' is what others used meanwhile (``others``, in cores); a window that
others crowded is measured again (``CROWDED``, ``TRIES``). A layer's cost is all-on's CPU
per request minus its "no-LAYER" variant's. The ratio lines are
``breakdown-VARIANT/all-on-cpu``: the variant's CPU per request over all-on's (1 - the
value: the share of all-on's CPU that the layer costs; for ``bare``, that of all layers
together). Figures and how to read them: docs/benchmarks.md. Linux only (/proc).
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.loadgen import LoadGenerator, LoadResult
from bench.process import Target, free_port, running
from bench.proxy import (
    AUTH_PATH,
    GATEWAY_HEALTH_PATH,
    POLICIES,
    WARMUP_SECONDS,
    Measurement,
    auth_token,
    gateway_command,
    require_no_errors,
)

LAYERS = ("access-log", "metrics", "resilience", "limits", "shadow", "ryw", "auth")
# Layers without a switch of their own: bench.breakdown_gateway takes them out.
LAUNCHED = frozenset({"metrics", "resilience"})
SHADOW_SAMPLE = 0.001
# A window in which other processes kept more than this many cores busy is measured again
# (at most TRIES times in all; the least crowded is kept): the machine is shared, and what
# crowds the gateway's core changes its CPU per request.
CROWDED = 0.25
TRIES = 3


@dataclass(frozen=True)
class Variant:
    name: str
    off: frozenset[str]  # of LAYERS


ALL_ON = Variant("all-on", frozenset())
BARE = Variant("bare", frozenset(LAYERS))
VARIANTS = (ALL_ON, *(Variant(f"no-{layer}", frozenset({layer})) for layer in LAYERS), BARE)

_UPSTREAMS = """\
upstreams:
  legacy: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
  backend: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
  candidate: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: legacy
shadow_store: {{url: "sqlite:///{store}"}}
"""
# The writer's key, new in every run: its POST pins another user for read-your-writes.
WRITER_SECRET = secrets.token_hex(32)
_AUTH = """\
auth:
  default: required
  cache_size: 10000
  keys:
    - {{id: bench, algorithm: RS256, public_key_file: bench.pem}}
    - {{id: writer, algorithm: HS256, secret: "{secret}"}}
authz: {{engine: embedded, policies: "{policies}", cache: 5s}}
"""
_NO_AUTH = "auth: {default: none}\nauthz: none\n"
# `legacy` is the monolith (the default); the benched route's `backend` is CDC-fed.
_RYW = "read_your_writes:\n  window: 1h\n  upstreams: {backend: {}}\n"
_ROUTE = "routes:\n  - name: search\n    path: {path}\n    upstream: backend\n"
_LIMIT = "    rate_limit: {limit: 1000000, window: 1s}\n"
_SHADOW = f"    shadow: {{upstream: candidate, sample: {SHADOW_SAMPLE}, timeout: 5s}}\n"
# The write that pins another user: a buyer's order (policies/authz.rego), to the monolith.
WRITE_PATH = "/orders"
WRITER_COOKIE = ("Cookie", "strangler_sticky=" + "fedcba9876543210" * 2)


def routes(off: frozenset[str], port: int, workdir: Path) -> str:
    """The routes.yaml of a variant: every layer of routes.yaml on but those in `off`."""
    text = _UPSTREAMS.format(port=port, store=workdir / "shadow.db")
    if "auth" in off:
        text += _NO_AUTH
    else:
        text += _AUTH.format(secret=WRITER_SECRET, policies=POLICIES)
    if "ryw" not in off:
        text += _RYW
    text += _ROUTE.format(path=AUTH_PATH)
    if "limits" not in off:
        text += _LIMIT
    if "shadow" not in off:
        text += _SHADOW
    return text


def command(off: frozenset[str], routes_file: Path, port: int) -> list[str]:
    """`gateway serve` as bench proxy starts it, or bench.breakdown_gateway with the same
    arguments when a layer without a switch is off; the access log on unless it is off."""
    argv = gateway_command(routes_file, port)
    if "access-log" not in off:
        argv = [arg for arg in argv if arg != "--no-access-log"]
    launched = sorted(off & LAUNCHED)
    if not launched:
        return argv
    serve_arguments = argv[argv.index("serve") + 1 :]
    launcher = [sys.executable, "-m", "bench.breakdown_gateway", "--off", ",".join(launched)]
    return [*launcher, *serve_arguments]


def parse_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds of every thread of a process, from its /proc/PID/stat."""
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return parse_cpu_seconds(stat.read())
    except (OSError, IndexError, ValueError) as exc:
        raise BenchError(f"cannot read the CPU time of process {pid}: {exc!r}") from exc


def machine_cpu_seconds() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(n) for n in stat.readline().split()[1:9]]
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read /proc/stat: {exc!r}") from exc
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _ours(pids: tuple[int, ...]) -> float:
    """CPU seconds of this process, its waited-for children (wrk) and `pids` so far."""
    times = os.times()
    mine = times.user + times.system + times.children_user + times.children_system
    return mine + sum(cpu_seconds(pid) for pid in pids)


@dataclass(frozen=True)
class Sample:
    """One variant's measured window."""

    requests_per_second: float
    micros: float  # the gateway's CPU per completed request, in microseconds
    busy: float  # the gateway's CPU seconds per second of the window (1.0: one core)
    # Cores busy with anything but the bench's processes (another benchmark on the machine):
    # a window that others crowded shows here.
    others: float


def sample(
    generate: LoadGenerator, target: Target, upstream_pid: int, connections: int, duration: int
) -> tuple[LoadResult, Sample]:
    """The gateway's CPU over one saturated run after a warm-up, per completed request."""
    generate(target.url, connections, WARMUP_SECONDS, target.headers)
    pids = (target.pid, upstream_pid)
    cpu, ours, machine = cpu_seconds(target.pid), _ours(pids), machine_cpu_seconds()
    started = time.monotonic()
    result = generate(target.url, connections, duration, target.headers)
    elapsed = time.monotonic() - started
    cpu, ours = cpu_seconds(target.pid) - cpu, _ours(pids) - ours
    others = (machine_cpu_seconds() - machine - ours) / elapsed
    if result.requests == 0:
        raise BenchError(f"{target.name} completed no requests")
    micros = cpu / result.requests * 1e6
    return result, Sample(result.requests_per_second, micros, cpu / elapsed, max(0.0, others))


def _pin_another_user(target: Target, auth: bool) -> None:
    """A write through the gateway by another user: their pin is there for every read."""
    headers = [WRITER_COOKIE]
    if auth:
        claims = {"sub": "writer", "roles": ["buyer"], "exp": int(time.time()) + 3600}
        token = jwt.encode(claims, WRITER_SECRET, algorithm="HS256", headers={"kid": "writer"})
        headers.append(("Authorization", f"Bearer {token}"))
    url = target.url.replace(AUTH_PATH, WRITE_PATH)
    response = httpx.post(url, headers=headers, timeout=5, trust_env=False)
    if response.status_code != 200:
        raise BenchError(f"{target.name}: the writer's POST got {response.status_code}")


def _check(target: Target) -> None:
    """The loaded request is answered, by the route's upstream (not pinned, not refused)."""
    response = httpx.get(target.url, headers=target.headers, timeout=5, trust_env=False)
    answered = response.headers.get("x-strangler-upstream")
    if response.status_code != 200 or answered != "backend":
        raise BenchError(f"{target.name}: got {response.status_code} from {answered}")


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    rounds: int


def _gateways(stack: ExitStack, workdir: Path) -> tuple[int, list[Target]]:
    """Start the upstream and one gateway per variant, each checked; the upstream's pid."""
    port = free_port()
    backend = stack.enter_context(
        running(
            "upstream",
            upstream.command(port),
            port=port,
            ready_path="/",
            url_path=AUTH_PATH,
            log_dir=workdir,
        )
    )
    bearer = (("Authorization", f"Bearer {auth_token(workdir)}"),)
    targets = []
    for variant in VARIANTS:
        routes_file = workdir / f"{variant.name}.yaml"
        routes_file.write_text(routes(variant.off, port, workdir))
        gateway_port = free_port()
        target = stack.enter_context(
            running(
                variant.name,
                command(variant.off, routes_file, gateway_port),
                port=gateway_port,
                ready_path=GATEWAY_HEALTH_PATH,
                url_path=AUTH_PATH,
                log_dir=workdir,
                headers=bearer,
            )
        )
        if "ryw" not in variant.off:
            _pin_another_user(target, "auth" not in variant.off)
        _check(target)
        targets.append(target)
    return backend.pid, targets


def _medians(samples: dict[str, list[Sample]]) -> dict[str, Sample]:
    return {
        name: Sample(
            statistics.median(s.requests_per_second for s in runs),
            statistics.median(s.micros for s in runs),
            statistics.median(s.busy for s in runs),
            statistics.median(s.others for s in runs),
        )
        for name, runs in samples.items()
    }


def table(samples: dict[str, list[Sample]]) -> str:
    """Per variant the medians over the rounds, the spread (highest - lowest) of its CPU per
    request, and the layer's cost: all-on's CPU per request minus the variant's."""
    medians = _medians(samples)
    all_on = medians[ALL_ON.name].micros
    lines = [
        f"{'variant':<15}{'requests/s':>11}{'busy':>6}{'others':>8}"
        f"{'us CPU/req':>12}{'spread':>8}{'cost us':>9}"
    ]
    for variant in VARIANTS:
        m, runs = medians[variant.name], [s.micros for s in samples[variant.name]]
        cost = "" if variant is ALL_ON else f"{all_on - m.micros:+.1f}"
        lines.append(
            f"{variant.name:<15}{m.requests_per_second:>11.1f}{m.busy:>6.2f}{m.others:>8.2f}"
            f"{m.micros:>12.1f}{max(runs) - min(runs):>8.1f}{cost:>9}"
        )
    return "\n".join(lines)


def ratios(samples: dict[str, list[Sample]]) -> list[str]:
    """`ratio breakdown-VARIANT/all-on-cpu=`: the variant's CPU per request over all-on's."""
    medians = _medians(samples)
    all_on = medians[ALL_ON.name].micros
    return [
        f"ratio breakdown-{v.name}/all-on-cpu={medians[v.name].micros / all_on:.3f}"
        for v in VARIANTS[1:]
    ]


def _least_crowded(
    generate: LoadGenerator, target: Target, upstream_pid: int, options: Options
) -> tuple[LoadResult, Sample]:
    """A sample of `target`, measured again while other processes crowd the machine."""
    best: tuple[LoadResult, Sample] | None = None
    for _ in range(TRIES):
        result, measured = sample(
            generate, target, upstream_pid, options.connections, options.duration
        )
        if best is None or measured.others < best[1].others:
            best = (result, measured)
        if measured.others <= CROWDED:
            break
        print(f"{target.name}: others kept {measured.others:.2f} cores busy; again", flush=True)
    assert best is not None
    return best


def run(options: Options) -> int:
    """Run every variant `options.rounds` times, print the medians' table and the ratios."""
    name, generate = loadgen.choose(options.loadgen)
    print(
        f"proxy breakdown: {name}, {options.connections} connections, {options.duration} s "
        f"per variant after a {WARMUP_SECONDS} s warm-up, {options.rounds} round(s); "
        f"shadow sample {SHADOW_SAMPLE}",
        flush=True,
    )
    samples: dict[str, list[Sample]] = {v.name: [] for v in VARIANTS}
    measurements = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-bd-")))
        upstream_pid, targets = _gateways(stack, workdir)
        for round_number in range(options.rounds):
            # alternate the order, so a drift of the machine does not favour one end
            order = targets if round_number % 2 == 0 else targets[::-1]
            for target in order:
                result, measured = _least_crowded(generate, target, upstream_pid, options)
                samples[target.name].append(measured)
                measurements.append(Measurement(target.name, result))
                print(
                    f"round {round_number + 1} {target.name}: {measured.requests_per_second:.1f}"
                    f" req/s, {measured.micros:.1f} us CPU/req, busy {measured.busy:.2f}, "
                    f"others {measured.others:.2f}",
                    flush=True,
                )
    print(table(samples))
    print("\n".join(ratios(samples)))
    require_no_errors(measurements)
    return 0
