"""The soak benchmark: a fixed rate through every feature for minutes, the gateway's memory
and open descriptors sampled as it goes.

One gateway in front of one upstream, with a second upstream as the shadow candidate (both
``bench.upstream``). The gateway runs what a production one runs, with its caches off so
every request does the whole work:

- auth required: an RS256 token on every request, verified each time (token cache off);
- the embedded policy asked for every request (decision cache off);
- ``/products`` mirrored to the candidate for 10% of requests (the shadow worker process
  and its SQLite store);
- ``/search`` rate-limited in memory, with a limit the run never reaches (every request
  is counted, none refused).

wrk sends varied paths and queries (a Lua script alternates ``/products/<n>?page=<m>`` and
``/search?q=w<n>``), so no two requests build the same decision input. A 5 s saturation
probe with the same mix finds what the gateway carries; the soak then offers ``--share`` of
it (default 65%), or ``--rps``, through connections that each wait ``connections / rate``
after every answer. After ``--warmup`` seconds the gateway's resident memory and open file
descriptors are read from /proc every few seconds for ``--minutes``.

The ratios compare the last sample with the first one after the warm-up:
``soak-rss-end/start`` (goal: at most 1.10 over 10 minutes) and ``soak-fds-end/start``
(descriptors: pooled connections and files, flat when nothing leaks). Needs wrk (Linux:
/proc is read).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

from bench import loadgen, upstream
from bench.errors import BenchError
from bench.loadgen import LoadResult
from bench.process import Stage, free_port
from bench.proxy import GATEWAY_HEALTH_PATH, MAX_ERROR_SHARE, POLICIES, auth_token, gateway_command

PROBE_SECONDS = 5
_ROUTES = """\
upstreams:
  primary: {{url: "http://127.0.0.1:{primary}", timeout: 5s}}
  candidate: {{url: "http://127.0.0.1:{candidate}", timeout: 5s}}
default: primary
auth:
  default: required
  cache_size: 0
  keys:
    - {{id: bench, algorithm: RS256, public_key_file: bench.pem}}
authz: {{engine: embedded, policies: "{policies}", cache: off}}
shadow_store: {{url: "sqlite:///{store}"}}
routes:
  - name: products
    path: /products
    upstream: primary
    shadow: {{upstream: candidate, sample: 0.1, timeout: 5s}}
  - name: search
    path: /search
    upstream: primary
    rate_limit: {{limit: 1000000, window: 1s}}
"""
# Public reads in policies/authz.rego: a product item and a search, every one different.
_REQUESTS = """\
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", "/products/" .. (n % 100003) .. "?page=" .. (n % 97))
  end
  return wrk.format("GET", "/search?q=w" .. n)
end
"""
_DELAY = "function delay()\n  return {milliseconds}\nend\n"


@dataclass(frozen=True)
class Options:
    minutes: float
    warmup: int  # seconds of load before the first sample that counts
    connections: int
    rps: int | None  # a fixed rate; None: `share` of the saturation probe
    share: float


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the soak's load started
    rss: int  # bytes
    fds: int


def read_sample(pid: int, seconds: float) -> Sample:
    """The process's resident memory and open descriptor count now, from /proc."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError) as exc:
        raise BenchError(f"cannot read process {pid} from /proc: {exc!r}") from exc
    return Sample(seconds, rss_kib * 1024, fds)


class Sampler:
    """Samples a process every `interval` seconds on a thread until stopped."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self.error: BenchError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(read_sample(self.pid, time.monotonic() - self._started))
            except BenchError as exc:
                self.error = exc
                return
            if self._stop.wait(self.interval):
                return


def run(options: Options) -> int:
    seconds = round(options.minutes * 60)
    if seconds < 1:
        raise BenchError("--minutes must give at least one second of soak")
    print(
        f"soak benchmark: wrk, {options.connections} connections, auth + embedded policy "
        f"(caches off), a rate-limited route, a 10%-shadowed route, varied paths; "
        f"{options.warmup} s warm-up, then {seconds} s sampled",
        flush=True,
    )
    with ExitStack() as stack:
        stage = Stage(stack, "strangler-soak-", "")
        work, start = stage.work, stage.start

        primary, candidate = free_port(), free_port()
        start("primary", upstream.command(primary), primary, "/")
        start("candidate", upstream.command(candidate), candidate, "/")
        bearer = (("Authorization", f"Bearer {auth_token(work)}"),)
        routes = work / "routes.yaml"
        routes.write_text(
            _ROUTES.format(
                primary=primary, candidate=candidate, policies=POLICIES, store=work / "shadow.db"
            )
        )
        port = free_port()
        gateway = start("gateway", gateway_command(routes, port), port, GATEWAY_HEALTH_PATH)
        rate = options.rps
        if rate is None:
            probe = loadgen.run_wrk_script(
                gateway.url, options.connections, PROBE_SECONDS, _REQUESTS, bearer
            )
            rate = max(1, round(probe.requests_per_second * options.share))
            print(
                f"probe: {probe.requests_per_second:.0f} req/s saturated; offering {rate} req/s "
                f"({options.share:.0%})",
                flush=True,
            )
        think_ms = max(1, round(options.connections / rate * 1000))
        script = _REQUESTS + _DELAY.format(milliseconds=think_ms)
        interval = min(10.0, max(1.0, seconds / 60))
        with Sampler(gateway.pid, interval) as sampler:
            result = loadgen.run_wrk_script(
                gateway.url, options.connections, options.warmup + seconds, script, bearer
            )
    if sampler.error is not None:
        raise sampler.error
    soaked = [s for s in sampler.samples if s.seconds >= options.warmup]
    if len(soaked) < 2:
        raise BenchError("fewer than two samples after the warm-up: nothing to compare")
    print(_table(soaked))
    print(_load(result))
    first, last = soaked[0], soaked[-1]
    print(f"ratio soak-rss-end/start={last.rss / first.rss:.3f}")
    print(f"ratio soak-fds-end/start={last.fds / first.fds:.3f}")
    attempts = result.requests + result.errors
    return 1 if attempts == 0 or result.errors / attempts > MAX_ERROR_SHARE else 0


def _table(samples: list[Sample]) -> str:
    """About ten rows whatever the length: the first, every tenth, the last."""
    step = max(1, len(samples) // 10)
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    lines = [f"{'seconds':>8}{'rss MB':>9}{'fds':>6}"]
    lines += [f"{s.seconds:>8.0f}{s.rss / 1e6:>9.1f}{s.fds:>6}" for s in shown]
    return "\n".join(lines)


def _load(result: LoadResult) -> str:
    errors = f" ({result.describe_errors()})" if result.errors else ""
    return (
        f"load: {result.requests} requests, {result.requests_per_second:.1f} req/s, "
        f"p50 {result.p50 * 1000:.2f} ms, p99 {result.p99 * 1000:.2f} ms, "
        f"{result.errors} errors{errors}"
    )
