"""`bench proxy --workers 2` end to end (Python load generator, one second per target): the
table, the CPU lines, how the workers shared the requests, and the ratio line. The ratio's
goal is the benchmark's business, not a test's."""

from __future__ import annotations

import math
import re
import subprocess
import sys


def test_bench_proxy_workers_ends_with_the_ratio_line() -> None:
    argv = ["proxy", "--workers", "2", "--duration", "1", "--loadgen", "python"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    for line, name in ((lines[-2], "gateway-1w"), (lines[-1], "gateway-1w-per-core")):
        match = re.fullmatch(rf"ratio gateway-2w/{name}=([0-9]+\.[0-9]{{3}})", line)
        assert match is not None, done.stdout
        assert math.isfinite(float(match.group(1))) and float(match.group(1)) > 0
    assert re.search(r"^cpu gateway-2w: gateway [0-9.]+, upstream [0-9.]+", done.stdout, re.M)
    shares = re.search(r"gateway-2w requests per worker .*: 0: (\d+)%, 1: (\d+)%", done.stdout)
    assert shares is not None, done.stdout  # both workers answered some, and the scrape says so
    rows = {
        line.split()[0]: line.split() for line in lines if re.match(r"gateway-\dw +[0-9]", line)
    }
    assert rows["gateway-1w"][-1] == "0" and rows["gateway-2w"][-1] == "0"
