"""The proxy benchmark: wrk's output parser, the load generators, the targets, the whole run.

The wrk outputs below are verbatim from wrk 4.1.0 on this project's machine: against the bench
upstream (microseconds), the gateway (milliseconds), and a deliberately slow server that also
answered 500 and dropped connections (seconds, with both kinds of error).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench import loadgen, nginx, upstream
from bench.errors import BenchError
from bench.process import Target, free_port, running

WRK_MICROSECONDS = """\
Running 2s test @ http://127.0.0.1:18021/bench
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   180.19us  161.30us   4.16ms   96.27%
    Req/Sec   132.14k    12.00k  141.66k    85.00%
  Latency Distribution
     50%  170.00us
     75%  209.00us
     90%  267.00us
     99%  522.00us
  263090 requests in 2.00s, 53.69MB read
Requests/sec: 131482.55
Transfer/sec:     26.83MB
"""

WRK_MILLISECONDS = """\
Running 2s test @ http://127.0.0.1:34875/bench
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    14.83ms   10.96ms 191.26ms   95.42%
    Req/Sec     4.63k   775.25     6.02k    65.00%
  Latency Distribution
     50%   12.76ms
     75%   15.96ms
     90%   17.74ms
     99%   56.05ms
  9224 requests in 2.00s, 2.58MB read
Requests/sec:   4602.74
Transfer/sec:      1.29MB
"""

# wrk pads whole-second values with a trailing space ("1.23s ").
WRK_SECONDS_WITH_ERRORS = """\
Running 4s test @ http://127.0.0.1:18020/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.26s   148.70ms   1.50s    61.11%
    Req/Sec     9.36      6.80    20.00     57.14%
  Latency Distribution
     50%    1.23s 
     75%    1.40s 
     90%    1.46s 
     99%    1.50s 
  18 requests in 4.01s, 2.78KB read
  Socket errors: connect 0, read 2, write 0, timeout 0
  Non-2xx or 3xx responses: 4
Requests/sec:      4.49
Transfer/sec:     710.18B
"""  # noqa: W291  (the trailing spaces are wrk's)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (WRK_MICROSECONDS, loadgen.LoadResult(263090, 0, 131482.55, 170e-6, 522e-6)),
        (WRK_MILLISECONDS, loadgen.LoadResult(9224, 0, 4602.74, 12.76e-3, 56.05e-3)),
        (WRK_SECONDS_WITH_ERRORS, loadgen.LoadResult(18, 6, 4.49, 1.23, 1.50)),
    ],
    ids=["us", "ms", "s-with-errors"],
)
def test_parse_wrk_reads_rate_percentiles_and_errors(
    text: str, expected: loadgen.LoadResult
) -> None:
    result = loadgen.parse_wrk(text)

    assert result.requests == expected.requests
    assert result.errors == expected.errors
    assert result.requests_per_second == pytest.approx(expected.requests_per_second)
    assert result.p50 == pytest.approx(expected.p50)
    assert result.p99 == pytest.approx(expected.p99)


def test_parse_wrk_says_which_errors() -> None:
    result = loadgen.parse_wrk(WRK_SECONDS_WITH_ERRORS)

    assert result.error_kinds == (("read", 2), ("status", 4))
    assert result.describe_errors() == "read 2, status 4"
    assert loadgen.parse_wrk(WRK_MILLISECONDS).describe_errors() == ""


def test_parse_wrk_without_latency_distribution_is_an_error() -> None:
    without = "\n".join(
        line for line in WRK_MILLISECONDS.splitlines() if not re.match(r"\s+\d+%", line)
    )

    with pytest.raises(BenchError, match="50% latency"):
        loadgen.parse_wrk(without)


def test_parse_wrk_of_a_failed_run_is_an_error() -> None:
    with pytest.raises(BenchError, match="wrk's output"):
        loadgen.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.fixture
def direct(tmp_path: Path) -> Iterator[Target]:
    port = free_port()
    with running(
        "direct",
        upstream.command(port),
        port=port,
        ready_path="/bench",
        url_path="/bench",
        log_dir=tmp_path,
    ) as target:
        yield target


def test_python_loadgen_stops_at_its_request_budget(direct: Target) -> None:
    result = loadgen.run_python(direct.url, connections=4, duration=10, max_requests=200)

    assert result.requests == 200
    assert result.errors == 0
    assert result.requests_per_second > 0
    assert 0 < result.p50 <= result.p99


def test_python_loadgen_counts_refused_connections_as_errors() -> None:
    result = loadgen.run_python(
        f"http://127.0.0.1:{free_port()}/bench", connections=2, duration=1, max_requests=20
    )

    assert result.requests == 0
    assert result.errors == 20


@pytest.mark.skipif(loadgen.wrk_binary() is None, reason="wrk is not installed")
def test_wrk_loadgen_against_the_upstream(direct: Target) -> None:
    result = loadgen.run_wrk(direct.url, connections=4, duration=1)

    assert result.requests > 0
    assert result.errors == 0
    assert 0 < result.p50 <= result.p99


@pytest.mark.skipif(nginx.binary() is None, reason="nginx is not installed")
def test_nginx_proxies_to_the_upstream(direct: Target, tmp_path: Path) -> None:
    upstream_port = urlsplit(direct.url).port
    executable = nginx.binary()
    assert executable is not None
    assert upstream_port is not None
    port = free_port()
    argv = nginx.command(
        executable, tmp_path / "nginx", listen_port=port, upstream_port=upstream_port
    )

    with running(
        "nginx", argv, port=port, ready_path="/bench", url_path="/bench", log_dir=tmp_path
    ) as target:
        result = loadgen.run_python(target.url, connections=4, duration=10, max_requests=100)

    assert result.requests == 100
    assert result.errors == 0


def test_a_target_that_exits_early_is_reported_with_its_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"]

    with (
        pytest.raises(BenchError, match=r"(?s)exited with status 3.*no config"),
        running("broken", argv, port=free_port(), ready_path="/", url_path="/", log_dir=tmp_path),
    ):
        pass


def test_a_target_is_stopped_when_the_block_raises(tmp_path: Path) -> None:
    port = free_port()

    with (
        pytest.raises(RuntimeError),
        running(
            "direct",
            upstream.command(port),
            port=port,
            ready_path="/",
            url_path="/",
            log_dir=tmp_path,
        ),
    ):
        raise RuntimeError("interrupted")

    result = loadgen.run_python(
        f"http://127.0.0.1:{port}/", connections=1, duration=1, max_requests=1
    )
    assert result.errors == 1


def test_bench_proxy_end_to_end_ends_with_the_ratio_lines() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "proxy",
            "--duration",
            "1",
            "--loadgen",
            "python",
            "--no-nginx",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-6] == "nginx: skipped (turned off with --no-nginx)"
    names = ["gateway/direct", "auth/plain", "auth-nocache/plain", "split/plain", "split-new/plain"]
    for name, line in zip(names, lines[-5:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        ratio = float(match.group(1))
        assert math.isfinite(ratio) and ratio > 0
    # every target, the authenticated ones included, answered without errors
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.startswith(("auth", "gateway", "split"))
    }
    assert rows["auth"][-1] == "0" and rows["auth-nocache"][-1] == "0"
    assert rows["split"][-1] == "0" and rows["split-new"][-1] == "0"


def test_bench_shadow_end_to_end_ends_with_the_four_ratio_lines() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "shadow", "--duration", "1", "--loadgen", "python"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    names = [
        "shadow-fast/off-p99",
        "shadow-slow/off-p99",
        "shadow-fast/off-rps",
        "shadow-slow/off-rps",
    ]
    for name, line in zip(names, lines[-4:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert float(match.group(1)) > 0


def test_bench_cdc_end_to_end_ends_with_the_two_ratio_lines() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "cdc",
            "--events",
            "2000",
            "--rate",
            "500",
            "--lag-seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(re.match(r"lag sqlite at 500 events/s .* p50=.* ms p99=.* ms$", x) for x in lines)
    ceiling = r"the bridge without a database .*: [0-9]+ events/s, [0-9.]+ of raw sqlite, "
    assert any(re.match(ceiling + r"[0-9.]+ of raw postgres ", x) for x in lines), done.stdout
    bound = r"with a sink as fast per row .*\): [0-9.]+ of raw sqlite, [0-9.]+ of raw postgres$"
    assert any(re.match(bound, x) for x in lines), done.stdout
    for name, line in zip(["cdc-sqlite/raw", "cdc-postgres/raw"], lines[-2:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert float(match.group(1)) > 0


def test_bench_faults_end_to_end_ends_with_the_four_ratio_lines() -> None:
    argv = ["faults", "--duration", "2", "--connections", "4", "--rate", "100", "--rounds", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--loadgen", "python"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(re.fullmatch(r"healthy route success rate with faults: [0-9.]+%", x) for x in lines)
    ratios = {}
    names = [
        "faults/clean-p99",
        "faults/clean-rps",
        "faults/clean-success",
        "breaker-on/off-failing-load",
    ]
    for name, line in zip(names, lines[-4:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        ratios[name] = float(match.group(1))
    assert ratios["faults/clean-p99"] > 0
    # the breaker keeps most of the load off the failing upstream
    assert 0 < ratios["breaker-on/off-failing-load"] < 1, done.stdout
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("faults")}
    assert int(rows["faults-no-breaker"][-1]) > 0, done.stdout  # the upstream did fail
    assert [x for x in lines if x.startswith("round ")] == ["round 1:", "round 2:"]
    spreads = [x for x in lines if re.fullmatch(r"\S+: median [0-9.]+, spread .* over 2 rounds", x)]
    assert len(spreads) == len(names), done.stdout
