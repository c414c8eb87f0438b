"""What the bridge has done and how far behind it is, published as a JSON status file.

`strangler cdc status` reads the file; the bridge rewrites it (atomically) at most once per
`interval` and when it stops. Per topic: events applied / skipped / ignored / dead-lettered,
heartbeats and tombstones seen, lag in events (high watermark minus next offset, summed over
the topic's partitions) and in seconds (now minus the last applied event's `source.ts_ms`;
zero when no event is waiting), and the last applied source position. Overall: batches and
their latency, and `dead_lettered`, the messages sent to the dead-letter topic (the DLQ
count), whatever topic they came from.

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
    state: str = "starting"  # running, waiting-for-database, stopped
    _written_at: float = 0.0

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
            "batch_latency_ms": {
                "last": _ms(self.latencies[-1]) if self.latencies else None,
                "p50": _ms(_quantile(ordered, 0.5)),
                "p99": _ms(_quantile(ordered, 0.99)),
            },
            "topics": topics,
        }

    def publish(self, path: Path | None, *, force: bool = False, interval: float = 1.0) -> None:
        if path is None or (not force and time.monotonic() - self._written_at < interval):
            return
        self._written_at = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(tmp, path)  # readers never see half a file


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
        f"applied {status['applied']}  skipped {status['skipped']}  "
        f"dead-lettered {status['dead_lettered']}",
        f"{'topic':<36} {'applied':>9} {'skipped':>8} {'ignored':>8} {'dlq':>5} "
        f"{'lag':>7} {'lag s':>7}  position",
    ]
    for name, t in status["topics"].items():
        lines.append(
            f"{name:<36} {t['applied']:>9} {t['skipped']:>8} {t['ignored']:>8} "
            f"{t['dead_lettered']:>5} {t['lag_events']:>7} {t['lag_seconds']:>7}  {t['position']}"
        )
    return "\n".join(lines)
