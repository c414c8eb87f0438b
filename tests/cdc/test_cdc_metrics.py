"""The bridge's counters, its status file and `strangler cdc status`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cdc.metrics import Metrics, render


def busy_metrics() -> Metrics:
    metrics = Metrics(state="running")
    products = metrics.topic("legacy.public.products")
    products.applied, products.skipped, products.truncates = 120, 3, 1
    products.partitions = {0: 40, 1: 2}  # events behind, per partition
    products.last_source_ts_ms = int(time.time() * 1000) - 2500
    products.position = "0000000000000064/0000000000000064"
    metrics.topic("legacy.public.categories").applied = 12  # caught up
    metrics.dead_letter("legacy.public.products")
    metrics.dead_letter("legacy.message")
    for seconds in (0.004, 0.002, 0.010):
        metrics.batch_done(seconds)
    return metrics


def test_snapshot_has_lag_counts_the_dlq_and_batch_latency() -> None:
    status = busy_metrics().snapshot()
    products = status["topics"]["legacy.public.products"]
    assert products["lag_events"] == 42
    assert 2.4 <= products["lag_seconds"] < 60  # from source.ts_ms of the last applied event
    assert status["topics"]["legacy.public.categories"]["lag_seconds"] == 0.0  # none waiting
    assert (status["applied"], status["skipped"], status["dead_lettered"]) == (132, 3, 2)
    assert products["dead_lettered"] == 1
    assert status["batches"] == 3
    assert status["batch_latency_ms"] == {"last": 10.0, "p50": 4.0, "p99": 10.0}


def test_cdc_status_prints_lag_counts_and_latency(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    busy_metrics().publish(path, force=True)
    assert json.loads(path.read_text())["dead_lettered"] == 2
    result = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "--status-file", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == render(json.loads(path.read_text())) + "\n"
    header, totals, columns, *rows = result.stdout.splitlines()
    assert "state running" in header and "batch latency ms: last 10.0 p50 4.0 p99 10.0" in header
    assert totals == "applied 132  skipped 3  dead-lettered 2  truncates 1"
    assert columns.split() == [
        "topic",
        "applied",
        "skipped",
        "ignored",
        "dlq",
        "trunc",
        "lag",
        "lag",
        "s",
        "position",
    ]
    products = next(r for r in rows if r.startswith("legacy.public.products")).split()
    assert products[1:7] == ["120", "3", "0", "1", "1", "42"]
    assert float(products[7]) >= 2.4
    assert products[8] == "0000000000000064/0000000000000064"


def test_cdc_status_without_a_bridge_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "--status-file", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "no status at" in result.stderr


def test_a_crash_is_not_a_stop_and_restarts_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    first = Metrics(state="running")
    first.crashed(OverflowError("date value out of range"))
    first.publish(path, force=True)
    second = Metrics()
    second.recover(path)
    assert (second.restarts, second.last_error) == (1, "OverflowError: date value out of range")
    second.state = "running"
    second.publish(path, force=True)  # then SIGKILL: no final state written
    third = Metrics()
    third.recover(path)
    assert third.restarts == 2
    assert "ended while running, without a final status" in (third.last_error or "")
    third.stopped()  # SIGTERM: a clean stop clears the crash loop
    third.publish(path, force=True)
    fourth = Metrics()
    fourth.recover(path)
    assert (fourth.restarts, fourth.last_error) == (0, None)
    status = json.loads(path.read_text())
    assert (status["state"], status["restarts"], status["last_error"]) == ("stopped", 0, None)
    crashed = render({**status, "state": "crashed", "restarts": 3, "last_error": "boom"})
    assert "state crashed" in crashed and "restarts 3  last error: boom" in crashed
