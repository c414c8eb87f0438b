"""Evidence for promotions: what each route's upstreams did since the route's state began.

An epoch is one route in one rollout shape (state, weights, shadow candidate), identified
by a fingerprint of that shape: an edit that changes the shape starts a new epoch, and a
reload that does not keeps it. For every shadow or canary route the gateway keeps its epoch
in memory (`LiveEvidence`): when it began, and for split routes, per upstream, the requests,
the 5xx answers (the gateway's own 502/504 included) and a latency histogram. It saves them
every `rollout.interval` to the `rollout_evidence` table next to the shadow comparisons
(`EvidenceStore`, SQLite or PostgreSQL), one row per route, upstream and gateway process,
so `strangler routes promote` (another process) and other replicas read the same evidence.
Rows of a route's older epochs are deleted when the gateway saves a new one.

Latency is kept in buckets that grow by 5%, so a p99 is known within 5% (its bucket's upper
bound); two p99s in the same histogram are compared to within that.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config.routes import Route
from gateway.config.table import RouteTable

_GROWTH = 1.05
_BOUNDS: tuple[float, ...] = tuple(0.05 * _GROWTH**i for i in range(302))  # 0.05 ms .. 120 s
_SCHEMA_LOCK = 0x5A4D_0006  # pg_advisory_xact_lock key: "rollout evidence schema", issue 6
TRACKED_STATES = ("shadow", "canary")


@dataclass
class UpstreamEvidence:
    requests: int = 0
    errors: int = 0  # answers with a 5xx status
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS) + 1))

    def observe(self, status: int, ms: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self.buckets[bisect.bisect_left(_BOUNDS, ms)] += 1

    def add(self, other: UpstreamEvidence) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for i, count in enumerate(other.buckets):
            self.buckets[i] += count

    @property
    def ok_pct(self) -> float | None:
        return 100.0 * (self.requests - self.errors) / self.requests if self.requests else None

    def percentile(self, percent: int) -> float | None:
        """Nearest rank, as the upper bound of its bucket (ms); None without samples."""
        total = sum(self.buckets)
        if not total:
            return None
        rank, seen = math.ceil(total * percent / 100), 0
        for i, count in enumerate(self.buckets):
            seen += count
            if seen >= rank:
                return _BOUNDS[i] if i < len(_BOUNDS) else math.inf
        return math.inf  # unreachable: the buckets hold `total` samples

    def sparse(self) -> str:
        return json.dumps({str(i): n for i, n in enumerate(self.buckets) if n})

    @classmethod
    def from_row(cls, requests: int, errors: int, buckets: str) -> UpstreamEvidence:
        stats = cls(requests, errors)
        for i, n in json.loads(buckets).items():
            stats.buckets[int(i)] += int(n)
        return stats


@dataclass
class Epoch:
    fingerprint: str
    started: float
    upstreams: dict[str, UpstreamEvidence] = field(default_factory=dict)


def fingerprint(route: Route) -> str:
    """The rollout shape of a route: a change to it starts a new epoch."""
    rollout = route.rollout
    shape = (
        route.name,
        rollout.state,
        rollout.weights or ((route.upstream, 1),),
        route.shadow.upstream if route.shadow else None,
    )
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


class LiveEvidence:
    """This process's epochs; `observe` is called per request on split routes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.epochs: dict[str, Epoch] = {}

    def retarget(self, table: RouteTable) -> None:
        """Keep the epochs of routes whose shape is unchanged; start the others."""
        epochs: dict[str, Epoch] = {}
        for route in table.routes:
            if route.rollout.state not in TRACKED_STATES:
                continue
            shape = fingerprint(route)
            kept = self.epochs.get(route.name)
            if kept is None or kept.fingerprint != shape:
                upstreams = [n for n, w in route.rollout.weights if w > 0] or [route.upstream]
                kept = Epoch(shape, self.clock(), {n: UpstreamEvidence() for n in upstreams})
            epochs[route.name] = kept
        self.epochs = epochs

    def observe(self, route: str, upstream: str, status: int, ms: float) -> None:
        epoch = self.epochs.get(route)
        if epoch is not None and (stats := epoch.upstreams.get(upstream)) is not None:
            stats.observe(status, ms)


_metadata = sa.MetaData()
_rows = sa.Table(
    "rollout_evidence",
    _metadata,
    sa.Column("route", sa.String(200), primary_key=True),
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("replica", sa.String(200), primary_key=True),
    sa.Column("upstream", sa.String(200), primary_key=True),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("buckets", sa.Text, nullable=False),  # {bucket index: count}, JSON
)


class EvidenceStore:
    """Epochs in the `rollout_evidence` table; blocking calls (use a thread in the loop).

    The engine is the shadow store's (the same database), and its owner disposes of it."""

    def __init__(self, engine: Engine, replica: str, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.replica = replica  # this process: its rows are its own to replace
        self.clock = clock
        self._created = False
        self._lock = threading.Lock()

    def rows(self, live: LiveEvidence) -> list[dict[str, object]]:
        """A snapshot of `live` to `save`; take it on the event loop, which mutates it."""
        now = self.clock()
        return [
            {
                "route": route,
                "fingerprint": epoch.fingerprint,
                "replica": self.replica,
                "upstream": upstream,
                "started_at": epoch.started,
                "updated_at": now,
                "requests": stats.requests,
                "errors": stats.errors,
                "buckets": stats.sparse(),
            }
            for route, epoch in live.epochs.items()
            for upstream, stats in epoch.upstreams.items()
        ]

    def save(self, rows: list[dict[str, object]]) -> None:
        self._ready()
        c = _rows.c
        with self.engine.begin() as connection:
            connection.execute(sa.delete(_rows).where(c.replica == self.replica))
            for route, shape in {(r["route"], r["fingerprint"]) for r in rows}:
                stale = sa.and_(c.route == route, c.fingerprint != shape)
                connection.execute(sa.delete(_rows).where(stale))
            if rows:
                connection.execute(sa.insert(_rows), rows)

    def load(self, route: Route) -> Epoch | None:
        """The route's current epoch summed over every process that served it, or None."""
        self._ready()
        c = _rows.c
        shape = fingerprint(route)
        query = sa.select(c.upstream, c.started_at, c.requests, c.errors, c.buckets).where(
            c.route == route.name, c.fingerprint == shape
        )
        with self.engine.connect() as connection:
            found = connection.execute(query).all()
        if not found:
            return None
        epoch = Epoch(shape, min(row.started_at for row in found))
        for row in found:
            stats = UpstreamEvidence.from_row(row.requests, row.errors, row.buckets)
            epoch.upstreams.setdefault(row.upstream, UpstreamEvidence()).add(stats)
        return epoch

    def _ready(self) -> None:
        with self._lock:
            if self._created:
                return
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":  # replicas may race to create it
                    lock = sa.text("SELECT pg_advisory_xact_lock(:key)")
                    connection.execute(lock, {"key": _SCHEMA_LOCK})
                _metadata.create_all(connection)
            self._created = True
