"""`strangler demo --check` tells the whole story and verifies every step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway import config

ROOT = Path(__file__).resolve().parent.parent


def demo_check(
    workdir: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--check",
            "--workdir",
            str(workdir),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )


def test_demo_check_verifies_every_step(tmp_path: Path) -> None:
    result = demo_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "X-Strangler-Upstream: legacy" in out
    assert "X-Strangler-Upstream: search" in out
    assert "identical body" in out
    # the shadow steps: all match, then the rounded prices differ, then all match again
    shadowed = out[out.index("shadow /search") : out.index("points at the new service")]
    reports = [line for line in shadowed.splitlines() if "GET /_strangler/shadow" in line]
    assert len(reports) == 3
    assert "8 identical (100.0%), 0 differing" in reports[0]
    assert "0 identical (0.0%), 8 differing (100.0%)" in reports[1]
    assert "8 identical (100.0%), 0 differing" in reports[2]
    assert "differing field $.results[*].price (value_changed) in 8 comparisons" in shadowed
    # The search database came from the CDC bridge (a snapshot), not from a backfill, and a
    # write through the gateway reached the new service's /search.
    assert "search documents from a snapshot (op r)" in out
    assert "POST /products -> 201" in out
    assert "found by the new service's /search after" in out
    assert "the rename is in /search after" in out
    assert out.rstrip().endswith("All steps verified.")
    routes = config.load(tmp_path / "routes.yaml")
    search = routes.match("/search", "GET")
    assert search is not None and search.upstream == "search"  # the edit was made


def test_demo_check_fails_with_the_step_when_a_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = demo_check(tmp_path, "--gateway-port", str(port))
    assert result.returncode == 1
    assert "FAILED at step 3" in result.stderr


def test_demo_check_fails_naming_the_shadow_step_when_the_store_is_broken(
    tmp_path: Path,
) -> None:
    (tmp_path / "shadow.db").mkdir()  # not a database: no comparison can be stored or read
    result = demo_check(tmp_path)
    assert result.returncode == 1
    assert "FAILED at step 6 (Play 8 searches: the shadow report shows the match rate)" in (
        result.stderr
    )


def test_the_repository_routes_file_is_valid() -> None:
    table = config.load(ROOT / "routes.yaml")
    assert set(table.upstreams) == {"legacy", "search"}
    assert table.default == "legacy"


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    first, second = (ROOT / "README.md").read_text().splitlines()[:2]
    assert first.strip().endswith("strangler demo")
    assert second.strip().endswith("python -m pytest") and "[test]" in second
    assert "sed -n '2s/^    //p' README.md" in (ROOT / ".ci" / "run").read_text()


def test_demo_check_fails_with_the_step_when_the_cdc_bridge_cannot_start(tmp_path: Path) -> None:
    broken = tmp_path / "mapping.yaml"
    broken.write_text("topic_prefix: legacy\n")  # no tables: the bridge refuses to start
    result = demo_check(tmp_path, env={**os.environ, "CDC_MAPPING": str(broken)})
    assert result.returncode == 1
    assert "FAILED at step 2 (Set up the search service's own database" in result.stderr
    assert "the cdc process exited (1)" in result.stderr
    assert "missing 'tables'" in result.stderr  # the bridge's log, shown by --check
