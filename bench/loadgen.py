"""Load generators: a port with two adapters, picked by name (``wrk`` or ``python``).

Both drive a fixed number of keep-alive connections at one URL for a bounded time and report
the same figures in a ``LoadResult``: responses per second, the 50th and 99th latency
percentiles, and errors. An error is a socket error (connect, read, write, timeout) or a
response outside the success range; wrk's own range is 2xx and 3xx, the Python generator's is
2xx. Neither upstream nor proxy answers 3xx here, so the two agree. ``error_kinds`` says which
(wrk: connect, read, write, timeout, status; Python: socket, status), since a total alone
does not tell a reset from a slow answer from a 5xx.

With ``think`` > 0 each connection waits that long after every answer before it sends its
next request (wrk: a Lua ``delay()``, whole milliseconds), so ``connections / think`` is the
offered rate, less what the answers themselves take: a fixed rate for comparing latencies,
where the default (no wait) saturates the target and its latency is mostly queueing.

``wrk`` (C, one thread) is the one to trust for figures: it costs little CPU, which matters when
it shares the machine with the processes it measures. The Python generator (asyncio + aiohttp
on uvloop) exists for machines without wrk and for tests; it is slower than the servers it
loads, so its ratios say less.

``run_paced`` is not one of them: it sends a fixed rate of requests (open loop) and counts the
answers by status, for background traffic whose volume must not depend on how fast it is
answered (the faults benchmark's failing route).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import uvloop

from bench.errors import BenchError

# Per-request timeout of both generators, in seconds (wrk's default is 2 s).
_REQUEST_TIMEOUT_SECONDS = 2
# Keeps the Python generator's memory (one float per request) bounded whatever the duration.
MAX_PYTHON_REQUESTS = 2_000_000


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; latencies are in seconds."""

    requests: int
    errors: int
    requests_per_second: float
    p50: float
    p99: float
    error_kinds: tuple[tuple[str, int], ...] = ()  # (kind, count) of the kinds that happened

    def describe_errors(self) -> str:
        """E.g. ``read 2, status 4``; empty without errors."""
        return ", ".join(f"{kind} {count}" for kind, count in self.error_kinds)


Headers = tuple[tuple[str, str], ...]


class LoadGenerator(Protocol):
    def __call__(
        self,
        url: str,
        connections: int,
        duration: int,
        headers: Headers = (),
        think: float = 0.0,
    ) -> LoadResult: ...


# -- wrk ---------------------------------------------------------------------------------------

# wrk prints times with the units of its format_time: us, ms, s, m, h (src/units.c).
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)\b"
_REQUESTS = re.compile(r"^\s*([0-9]+) requests in " + _TIME, re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([0-9]+(?:\.[0-9]+)?)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: ([0-9]+)")


def _percentile_pattern(percent: int) -> re.Pattern[str]:
    return re.compile(rf"^\s+{percent}(?:\.0+)?%\s+" + _TIME + r"\s*$", re.MULTILINE)


_P50 = _percentile_pattern(50)
_P99 = _percentile_pattern(99)


def _seconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def _search(pattern: re.Pattern[str], text: str, what: str) -> re.Match[str]:
    match = pattern.search(text)
    if match is None:
        raise BenchError(f"could not read {what} from wrk's output:\n{text}")
    return match


def parse_wrk(text: str) -> LoadResult:
    """Read a ``LoadResult`` from the output of ``wrk --latency``."""
    p50 = _search(_P50, text, "the 50% latency")
    p99 = _search(_P99, text, "the 99% latency")
    socket_errors = _SOCKET_ERRORS.search(text)
    non_2xx = _NON_2XX.search(text)
    counts = [int(n) for n in socket_errors.groups()] if socket_errors else [0, 0, 0, 0]
    counts.append(int(non_2xx.group(1)) if non_2xx else 0)
    kinds = ("connect", "read", "write", "timeout", "status")
    return LoadResult(
        requests=int(_search(_REQUESTS, text, "the request count").group(1)),
        errors=sum(counts),
        requests_per_second=float(_search(_RATE, text, "Requests/sec").group(1)),
        p50=_seconds(p50.group(1), p50.group(2)),
        p99=_seconds(p99.group(1), p99.group(2)),
        error_kinds=tuple((k, n) for k, n in zip(kinds, counts, strict=True) if n),
    )


def wrk_binary() -> str | None:
    """The wrk executable on PATH, or None when it is not installed."""
    return shutil.which("wrk")


def run_wrk(
    url: str, connections: int, duration: int, headers: Headers = (), think: float = 0.0
) -> LoadResult:
    executable = wrk_binary()
    if executable is None:
        raise BenchError("wrk is not on PATH; install it or use --loadgen python")
    if think > 0:
        script = f"function delay()\n  return {max(1, round(think * 1000))}\nend\n"
        return run_wrk_script(url, connections, duration, script, headers)
    return _wrk(executable, url, connections, duration, headers, [])


def run_wrk_script(
    url: str, connections: int, duration: int, script: str, headers: Headers = ()
) -> LoadResult:
    """wrk driven by a Lua ``script`` (its ``request()``, ``delay()``, ... hooks)."""
    executable = wrk_binary()
    if executable is None:
        raise BenchError("wrk is not on PATH; install it (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="strangler-wrk-") as work:
        path = f"{work}/script.lua"
        with open(path, "w") as out:
            out.write(script)
        return _wrk(executable, url, connections, duration, headers, ["-s", path])


def _wrk(
    executable: str,
    url: str,
    connections: int,
    duration: int,
    headers: Headers,
    extra: list[str],
) -> LoadResult:
    argv = [
        executable,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={_REQUEST_TIMEOUT_SECONDS}s",
        "--latency",
        *(f"-H{name}: {value}" for name, value in headers),
        *extra,
        url,
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{' '.join(argv)} failed: {exc}") from exc
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr}")
    return parse_wrk(done.stdout)


# -- Python ------------------------------------------------------------------------------------


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, round(percent / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class _Tally:
    """What the connection loops share: the request budget, latencies and errors."""

    def __init__(self, max_requests: int) -> None:
        self.budget = max_requests
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()  # socket (no answer), status (not 2xx)


async def _status(session: aiohttp.ClientSession, url: str) -> int | None:
    """GET `url` and read the body; the status, or None when no answer came."""
    try:
        async with session.get(url) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _connection_loop(
    session: aiohttp.ClientSession, url: str, deadline: float, tally: _Tally, think: float
) -> None:
    while tally.budget > 0 and time.perf_counter() < deadline:
        if think > 0 and tally.latencies:
            await asyncio.sleep(think)
        tally.budget -= 1
        start = time.perf_counter()
        status = await _status(session, url)
        if status is None:
            tally.errors["socket"] += 1
            continue
        tally.latencies.append(time.perf_counter() - start)
        if not 200 <= status < 300:
            tally.errors["status"] += 1


async def _drive(
    url: str,
    connections: int,
    duration: float,
    max_requests: int,
    headers: Headers,
    think: float,
) -> LoadResult:
    tally = _Tally(max_requests)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=dict(headers)
    ) as session:
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(
            *(_connection_loop(session, url, deadline, tally, think) for _ in range(connections))
        )
        elapsed = time.perf_counter() - start
    ordered = sorted(tally.latencies)
    return LoadResult(
        requests=len(ordered),
        errors=tally.errors.total(),
        requests_per_second=len(ordered) / elapsed if elapsed > 0 else 0.0,
        p50=_percentile(ordered, 50),
        p99=_percentile(ordered, 99),
        error_kinds=tuple(sorted(tally.errors.items())),
    )


def run_python(
    url: str,
    connections: int,
    duration: float,
    headers: Headers = (),
    think: float = 0.0,
    max_requests: int = MAX_PYTHON_REQUESTS,
) -> LoadResult:
    """Load ``url`` from ``connections`` keep-alive connections until ``duration`` seconds
    have passed or ``max_requests`` requests were sent, whichever comes first."""
    return uvloop.run(_drive(url, connections, duration, max_requests, headers, think))


@dataclass
class Paced:
    """What a paced (open-loop) load got back: answers by status, and no answer."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    unanswered: int = 0


async def _paced(url: str, rate: int, duration: float, tally: Paced) -> None:
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> None:
            status = await _status(session, url)
            if status is None:
                tally.unanswered += 1
            else:
                tally.statuses[status] += 1

        tasks: set[asyncio.Task[None]] = set()
        start = loop.time()
        while (due := start + tally.sent / rate) < start + duration:
            await asyncio.sleep(max(0.0, due - loop.time()))
            task = loop.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tally.sent += 1
        await asyncio.gather(*tasks)


def run_paced(url: str, rate: int, duration: float, tally: Paced) -> None:
    """Send `rate` requests a second to `url` for `duration` seconds, each on time whatever
    the answers before it (open loop: a faster answer does not mean more requests), and wait
    for the last answers. Fills `tally` as it goes (so another thread can run it)."""
    uvloop.run(_paced(url, rate, duration, tally))


GENERATORS: dict[str, LoadGenerator] = {"wrk": run_wrk, "python": run_python}


def choose(name: str) -> tuple[str, LoadGenerator]:
    """The generator called ``name``; ``auto`` is wrk when on PATH, else the Python one."""
    if name == "auto":
        name = "wrk" if wrk_binary() is not None else "python"
    return name, GENERATORS[name]
