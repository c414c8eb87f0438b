"""`python -m bench limits` end to end: three gateways, a redis-server, the ratio lines."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

import pytest


def test_bench_limits_ends_with_the_three_ratio_lines() -> None:
    if shutil.which("redis-server") is None:
        reason = "no redis-server on PATH"
        if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "limits", "--duration", "1", "--loadgen", "python"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    names = ["rl-memory/plain-rps", "rl-redis/plain-rps", "redis-check/redis-ping"]
    for name, line in zip(names, lines[-3:], strict=True):
        match = re.fullmatch(rf"ratio {name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert math.isfinite(float(match.group(1))) and float(match.group(1)) > 0
    table = lines[1 : lines.index(next(line for line in lines if line.startswith("rl-memory:")))]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert {name: row[-1] for name, row in rows.items()} == {
        "plain": "0",
        "rl-memory": "0",
        "rl-redis": "0",
    }  # every request answered: none was refused by the (unreachable) limit
