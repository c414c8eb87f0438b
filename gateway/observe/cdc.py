"""How far behind the CDC bridge is, as the gateway sees it: the bridge's status file read.

The bridge is its own process (`strangler cdc run`); it rewrites a JSON status file
atomically about once a second while it runs (cdc/metrics.py, the file `strangler cdc
status` prints). The gateway reads that file when asked (a Prometheus scrape, a dashboard
poll), never per request; where the file is and when it is stale is routes.yaml's `cdc:`
section (gateway/config/cdc.py).

Failing soft: no `cdc:` section, a missing or unreadable file, or a stale one is reported
as such (`detail`), never as an error of the request that asked.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from gateway.config.cdc import CdcSettings


@dataclass(frozen=True, slots=True)
class CdcTable:
    """One source table (one topic): what the bridge reported for it."""

    table: str  # <schema>.<table>, the topic's last two parts
    topic: str
    lag_seconds: float
    lag_events: int
    applied: int
    skipped: int
    dead_lettered: int
    position: str | None
    truncates: int = 0  # truncate events applied


@dataclass(frozen=True, slots=True)
class CdcSnapshot:
    configured: bool
    source: str | None = None  # the status file
    detail: str | None = None  # why there are no (fresh) numbers; None when all is well
    # the bridge's own: running, waiting-for-database, stopped (by a signal), crashed
    state: str | None = None
    age: float | None = None  # seconds since the bridge wrote the file
    tables: tuple[CdcTable, ...] = ()
    dead_lettered: int = 0  # messages the bridge sent to the dead-letter topic (the DLQ count)
    restarts: int = 0  # the bridge's starts after a crash since its last clean stop
    last_error: str | None = None  # why it crashed last (while restarts > 0 or crashed)

    @property
    def up(self) -> bool:
        return self.detail is None and self.state == "running"

    def describe(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "source": self.source,
            "up": self.up,
            "detail": self.detail,
            "state": self.state,
            "age_seconds": None if self.age is None else round(self.age, 3),
            "dead_lettered": self.dead_lettered,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "tables": [
                {
                    "table": t.table,
                    "topic": t.topic,
                    "lag_seconds": t.lag_seconds,
                    "lag_events": t.lag_events,
                    "applied": t.applied,
                    "skipped": t.skipped,
                    "dead_lettered": t.dead_lettered,
                    "position": t.position,
                    "truncates": t.truncates,
                }
                for t in self.tables
            ],
        }


NOT_CONFIGURED = CdcSnapshot(
    configured=False, detail="no cdc: section in routes.yaml (see docs/observe.md: CDC lag)"
)


async def read_status(settings: CdcSettings | None) -> CdcSnapshot:
    """The bridge's latest status; every failure is a snapshot that says what went wrong."""
    if settings is None:
        return NOT_CONFIGURED
    source = str(settings.status_file)
    try:
        data = await asyncio.to_thread(settings.status_file.read_bytes)
    except OSError as exc:
        detail = f"no CDC status at {source}: {exc.strerror} (is `strangler cdc run` running?)"
        return CdcSnapshot(True, source, detail)
    try:
        return _snapshot(json.loads(data), settings, source)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return CdcSnapshot(True, source, f"unreadable CDC status at {source}: {exc!r}")


def _snapshot(status: dict[str, Any], settings: CdcSettings, source: str) -> CdcSnapshot:
    age = max(0.0, time.time() - float(status["updated_at"]))
    tables = tuple(
        CdcTable(
            table=".".join(topic.rsplit(".", 2)[-2:]),
            topic=topic,
            lag_seconds=float(entry.get("lag_seconds", 0.0)),
            lag_events=int(entry.get("lag_events", 0)),
            applied=int(entry.get("applied", 0)),
            skipped=int(entry.get("skipped", 0)),
            dead_lettered=int(entry.get("dead_lettered", 0)),
            position=None if entry.get("position") is None else str(entry["position"]),
            truncates=int(entry.get("truncates", 0)),
        )
        for topic, entry in sorted(status["topics"].items())
    )
    detail = None
    if age > settings.stale_after:
        detail = (
            f"the CDC status is {age:.0f} s old (stale_after {settings.stale_after:g} s): "
            "the bridge is down or stuck"
        )
    state = str(status.get("state"))
    dead_lettered = int(status.get("dead_lettered", 0))
    error = status.get("last_error")
    return CdcSnapshot(
        True,
        source,
        detail,
        state,
        age,
        tables,
        dead_lettered,
        int(status.get("restarts", 0)),
        None if error is None else str(error),
    )
