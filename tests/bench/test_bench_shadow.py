"""bench shadow --separate end to end: the sink's ratios and where the CPU went."""

from __future__ import annotations

import re
import subprocess
import sys


def test_bench_shadow_separate_adds_the_sink_and_says_where_the_cpu_went() -> None:
    bench = [sys.executable, "-m", "bench", "shadow", "--separate"]
    done = subprocess.run(
        [*bench, "--duration", "1", "--loadgen", "python"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    ratios = [line for line in lines if line.startswith("ratio ")]
    assert "shadow-sink/off-p99" in " ".join(ratios)
    assert ratios[-1].startswith("ratio shadow-sink/off-rps="), done.stdout
    table = lines[lines.index(next(x for x in lines if x.startswith("fixed rate  us/"))) :]
    rows = {row.split()[0]: row.split()[1:] for row in table[1:5]}
    number = re.compile(r"[0-9]+")
    # gateway, waited, worker, candidate: no worker or candidate for the unshadowed gateway,
    # the sink asks no candidate; figures for the rest
    assert rows["off"][2:] == ["-", "-"]
    assert number.fullmatch(rows["shadow-sink"][2]) and rows["shadow-sink"][3] == "-"
    for name in ("shadow-fast", "shadow-slow"):
        assert all(number.fullmatch(field) for field in rows[name]), done.stdout
