"""`python -m bench soak` end to end, very short: the samples, the load line, the two ratios."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench import loadgen


@pytest.mark.skipif(loadgen.wrk_binary() is None, reason="wrk is not installed")
def test_bench_soak_ends_with_the_two_ratio_lines() -> None:
    argv = ["soak", "--minutes", "0.05", "--warmup", "1", "--rps", "100", "--connections", "4"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    load = re.fullmatch(r"load: ([0-9]+) requests, .* ([0-9]+) errors", lines[-3])
    assert load is not None, done.stdout
    assert int(load.group(1)) > 0 and int(load.group(2)) == 0, done.stdout
    for name, line in zip(["soak-rss-end/start", "soak-fds-end/start"], lines[-2:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert float(match.group(1)) > 0
    header = lines.index(f"{'seconds':>8}{'rss MB':>9}{'fds':>6}")
    samples = lines[header + 1 : -3]
    assert len(samples) >= 2, done.stdout  # a sample a second over three seconds
