"""What the bridge has done and how far behind it is, published as a JSON status file.

`strangler cdc status` reads the file; the bridge rewrites it (atomically) at most once per
`interval` and when it stops. Per topic: events applied / skipped / ignored / dead-lettered,
heartbeats and tombstones seen, lag in events (high watermark minus next offset, summed over
the topic's partitions) and in seconds (now minus the last applied event's `source.ts_ms`;
zero when no event is waiting), truncates applied, and the last applied source position.
Overall: batches and their latency, and `dead_lettered`, the messages sent to the
dead-letter topic (the DLQ count), whatever topic they came from.

The state says what happened (issue 17): `running`; `waiting-for-database` (an outage, the
batch retried with backoff); `stopped` (by SIGTERM/SIGINT, cleanly); `crashed` (an error
ended the process: `last_error` says which). A starting bridge reads the status its
predecessor left: after `crashed`, or after a run that ended without writing a final state
(SIGKILL, a lost host), `restarts` counts one more start and `last_error` is kept; after a
clean stop both are cleared. A crash loop shows as `restarts` growing. `operator` lists
the skip and replay requests carried out (cdc/actions.py).

The counters are plain attributes, read where they are needed: in this process at scrape
time (a metrics endpoint), or from the status file by another one.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LATENCY_WINDOW = 1000  # batches


@dataclass
class TopicStats:
    applied: int = 0
    skipped: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    heartbeats: int = 0
    tombstones: int = 0
    transactions: int = 0
    truncates: int = 0
    lag_events: int = 0
    last_source_ts_ms: int | None = None
    position: str | None = None
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> lag


@dataclass
class Metrics:
    topics: dict[str, TopicStats] = field(default_factory=dict)
    batches: int = 0
    dead_lettered: int = 0  # messages produced to the dead-letter topic
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    started_at: float = field(default_factory=time.time)
    state: str = "starting"  # running, waiting-for-database, stopped, crashed
    last_error: str | None = None
    restarts: int = 0  # starts after a crash since the last clean stop
    operator: list[dict[str, Any]] = field(default_factory=list)  # skip/replay carried out
    _written_at: float = 0.0

    def recover(self, path: Path | None) -> None:
        """Carry over how the previous run ended, from the status it left at `path`."""
        try:
            previous = json.loads(path.read_text()) if path is not None else None
        except (OSError, ValueError):
            return  # no previous run, or nothing readable from it
        if not isinstance(previous, dict):
            return
        operator = previous.get("operator")
        self.operator = operator if isinstance(operator, list) else []
        state = previous.get("state")
        if state == "stopped":
            return
        restarts = previous.get("restarts")
        self.restarts = (restarts if isinstance(restarts, int) else 0) + 1
        if state == "crashed":
            self.last_error = str(previous.get("last_error"))
        else:
            self.last_error = (
                f"the previous run (pid {previous.get('pid')}) ended while {state},"
                " without a final status (killed?)"
            )

    def crashed(self, error: BaseException) -> None:
        self.state = "crashed"
        self.last_error = f"{type(error).__name__}: {error}"

    def stopped(self) -> None:
        self.state = "stopped"
        self.last_error = None
        self.restarts = 0

    def topic(self, name: str) -> TopicStats:
        stats = self.topics.get(name)
        if stats is None:
            stats = self.topics[name] = TopicStats()
        return stats

    def dead_letter(self, topic: str) -> None:
        self.dead_lettered += 1
        self.topic(topic).dead_lettered += 1

    def batch_done(self, seconds: float) -> None:
        self.batches += 1
        self.latencies.append(seconds)

    def snapshot(self) -> dict[str, Any]:
        now_ms = time.time() * 1000
        ordered = sorted(self.latencies)
        topics = {}
        for name, stats in sorted(self.topics.items()):
            entry = asdict(stats)
            entry["lag_events"] = sum(stats.partitions.values())
            waiting = entry["lag_events"] > 0 and stats.last_source_ts_ms is not None
            entry["lag_seconds"] = (
                round((now_ms - stats.last_source_ts_ms) / 1000, 3) if waiting else 0.0  # type: ignore[operator]
            )
            entry["partitions"] = {str(p): lag for p, lag in stats.partitions.items()}
            topics[name] = entry
        return {
            "state": self.state,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "batches": self.batches,
            "applied": sum(t.applied for t in self.topics.values()),
            "skipped": sum(t.skipped for t in self.topics.values()),
            "dead_lettered": self.dead_lettered,
            "truncates": sum(t.truncates for t in self.topics.values()),
            "last_error": self.last_error,
            "restarts": self.restarts,
            "operator": self.operator,
            "batch_latency_ms": {
                "last": _ms(self.latencies[-1]) if self.latencies else None,
                "p50": _ms(_quantile(ordered, 0.5)),
                "p99": _ms(_quantile(ordered, 0.99)),
            },
            "topics": topics,
        }

    def publish(self, path: Path | None, *, force: bool = False, interval: float = 1.0) -> bool:
        """Write the status file if `interval` has passed (or `force`); whether it did."""
        if path is None or (not force and time.monotonic() - self._written_at < interval):
            return False
        self._written_at = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, path)  # readers never see half a file
        return True


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def render(status: dict[str, Any]) -> str:
    """The status file as `strangler cdc status` prints it."""
    latency = status["batch_latency_ms"]
    lines = [
        f"state {status['state']}  pid {status['pid']}  batches {status['batches']}  "
        f"batch latency ms: last {latency['last']} p50 {latency['p50']} p99 {latency['p99']}",
    ]
    if status.get("restarts") or status.get("last_error"):
        lines.append(
            f"restarts {status.get('restarts', 0)}  last error: {status.get('last_error')}"
        )
    lines += [
        f"applied {status['applied']}  skipped {status['skipped']}  "
        f"dead-lettered {status['dead_lettered']}  truncates {status.get('truncates', 0)}",
        f"{'topic':<36} {'applied':>9} {'skipped':>8} {'ignored':>8} {'dlq':>5} {'trunc':>5} "
        f"{'lag':>7} {'lag s':>7}  position",
    ]
    for name, t in status["topics"].items():
        lines.append(
            f"{name:<36} {t['applied']:>9} {t['skipped']:>8} {t['ignored']:>8} "
            f"{t['dead_lettered']:>5} {t.get('truncates', 0):>5} {t['lag_events']:>7} "
            f"{t['lag_seconds']:>7}  {t['position']}"
        )
    for action in status.get("operator") or ():
        lines.append(f"operator: {action.get('request')} ({action.get('result')})")
    return "\n".join(lines)
