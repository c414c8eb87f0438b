"""Shadow traffic: after the primary has answered the client, ask the candidate the same
question and compare the two answers, off the request path. This module is the port.

The proxy hands every sampled request to a `Mirror` as a `Copy` once the primary's response
is complete; the client's answer comes from the primary alone and is never delayed. Two
adapters, chosen by `shadow_worker: {mode: ...}` in routes.yaml:

- `process` (`gateway.shadow.worker`, the default): the candidate exchange, the diff and the
  store run in a worker process at a lower CPU priority. The gateway's cost per copy is one
  tuple appended to a batch that is written to a socket pair every 2 ms at most; when
  the worker falls behind, the bounded buffer overflows and copies are dropped and counted.
- `inline` (`gateway.shadow.comparer`): the same comparisons in the gateway's event loop.

Either way at most `concurrency` comparisons are in flight and further copies are dropped
and counted, never queued without bound (Envoy's and nginx's mirrors queue or slow the
primary; this drops), and `stats` holds per-route counters as plain in-memory data in the
gateway process, for the metrics endpoint to read at scrape time. Admission comes first:
the proxy asks `admit` before it keeps a byte of the exchange, so a copy that will be
dropped (the shadow side behind, or the gateway's own loop busy: `gateway.shadow.budget`)
costs a counter, not a tee, a tuple and a frame.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from gateway.base.histogram import Histogram
from gateway.config.routes import Route, Upstream
from gateway.config.shadow import ShadowSettings
from gateway.shadow.store import ShadowStore

SHADOW_HEADER = (b"x-strangler-shadow", b"1")
# Why a sampled copy was not compared: the `reason` label of strangler_shadow_dropped_total.
GATEWAY_BUSY = "gateway_busy"  # the gateway's event loop was busy (gateway.shadow.budget)
SHADOW_BEHIND = "shadow_behind"  # `concurrency` in flight, or the worker's credit or buffer
WORKER_DOWN = "worker_down"  # no shadow worker process (starting again, at most once a second)
BODY_TOO_LARGE = "body_too_large"  # the request body is over the shadow's max_body
DROP_REASONS = (GATEWAY_BUSY, SHADOW_BEHIND, WORKER_DOWN, BODY_TOO_LARGE)


class Copy(NamedTuple):
    """One mirrored request: the primary's request as forwarded and the primary's answer.

    A tuple, not a dataclass: it is built on the request path. The first `ROUTE_FIELDS`
    fields are the route's and travel to a worker once per route; the rest once per copy.
    """

    route: Route
    primary: Upstream
    candidate: Upstream
    method: str
    path: str  # normalised, for the record
    target: bytes  # path and query as forwarded
    headers: list[tuple[bytes, bytes]]  # the request headers as forwarded to the primary
    body: bytes | None
    status: int  # the primary's answer, as received
    response_headers: list[tuple[bytes, bytes]]
    response_body: bytes  # up to the shadow's response_cap
    truncated: bool  # the body was larger than the cap (or ended short)
    primary_ms: float


ROUTE_FIELDS = 3


@dataclass
class RouteStats:
    """Counters of one route's shadow traffic (in a worker: the change since its last report).

    `mirrored` counts every sampled copy; each ends up dropped (`drops`, by one of
    DROP_REASONS), a candidate error, or compared with one of four verdicts.
    """

    mirrored: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # reason -> copies
    candidate_errors: int = 0
    identical: int = 0
    different: int = 0
    noise_only: int = 0  # differing only in fields learned to be noisy
    status_only: int = 0  # bodies too large to compare: status and headers matched
    latency: Histogram = field(default_factory=Histogram)  # the candidate's, in seconds

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def compared(self) -> int:
        return self.identical + self.different + self.noise_only + self.status_only

    @property
    def matched(self) -> int:
        """Answers that agree (noise aside)."""
        return self.identical + self.noise_only

    @property
    def differed(self) -> int:
        return self.different

    def verdict(self, verdict: str) -> int:
        """The count for a store verdict: one of COMPARED, or candidate_error."""
        return (
            self.candidate_errors if verdict == "candidate_error" else int(getattr(self, verdict))
        )

    def add(self, other: RouteStats) -> None:
        self.mirrored += other.mirrored
        self.drops.update(other.drops)
        self.candidate_errors += other.candidate_errors
        self.identical += other.identical
        self.different += other.different
        self.noise_only += other.noise_only
        self.status_only += other.status_only
        self.latency.add(other.latency)


def route_stats(stats: dict[str, RouteStats], route: str) -> RouteStats:
    """`route`'s entry in `stats`, made on first use."""
    found = stats.get(route)
    if found is None:
        found = stats[route] = RouteStats()
    return found


def sampled(settings: ShadowSettings, method: str, request_id: str) -> bool:
    """Deterministic per request id, so a replayed request makes the same choice."""
    if method not in settings.methods:
        return False
    return zlib.crc32(request_id.encode()) < settings.sample * 2**32


class Mirror(Protocol):
    stats: dict[str, RouteStats]  # per route name, since the gateway started
    store: ShadowStore  # where the comparisons are kept, for reports

    def admit(self, route: Route) -> bool:
        """Whether a sampled request of `route` is to be copied; when not, it is dropped and
        counted here. Cheap: asked on the request path before anything is kept."""

    def launch(self, copy: Copy) -> None:
        """Compare `copy` off the request path, or drop and count it; never blocks."""

    def dropped(self, route: Route, reason: str) -> None:
        """A sampled request that cannot be mirrored, for `reason`, one of DROP_REASONS."""

    async def flush(self) -> None:
        """Until every comparison finished so far is in the store and in `stats`."""

    async def drain(self) -> None:
        """Until the comparisons in flight have finished too, then flush."""

    async def close(self) -> None: ...
