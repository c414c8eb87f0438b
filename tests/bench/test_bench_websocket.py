"""`bench websocket`: a short run ends with its ratio line, both targets measured."""

from __future__ import annotations

import re
import subprocess
import sys


def test_bench_websocket_ends_with_its_ratio_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "websocket", "--messages", "200"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio websocket-gateway/direct-p50=[0-9]+\.[0-9]{3}", lines[-1])
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert set(rows) == {"direct", "gateway"}
    assert all(re.fullmatch(r"[0-9]+us", value) for values in rows.values() for value in values)
