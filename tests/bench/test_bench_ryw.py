"""`python -m bench ryw` end to end: six gateways, a redis-server, the ratio lines."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from bench.consistency import VARIANTS


def test_bench_ryw_ends_with_a_ratio_line_per_variant() -> None:
    if shutil.which("redis-server") is None:
        reason = "no redis-server on PATH"
        if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (STRANGLER_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ryw", "--duration", "1", "--loadgen", "python"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    for variant, line in zip(VARIANTS, lines[-len(VARIANTS) :], strict=True):
        match = re.fullmatch(rf"ratio {variant}/plain-rps=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert math.isfinite(float(match.group(1))) and float(match.group(1)) > 0
    checks = [line for line in lines if line.startswith("in process, a read's check")]
    assert len(checks) == 3, done.stdout
