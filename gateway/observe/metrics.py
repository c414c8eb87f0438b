"""`GET /metrics`: the gateway's stats in Prometheus' text format, built at scrape time.

Nothing here runs per request. Each feature counts into plain objects of its own (ints,
dicts, `gateway.base.histogram.Histogram`) and registers a *source*: a function, called at every
scrape, that yields prometheus_client metric families built from those counters. Calling
prometheus_client's labelled metrics per request would take a lock and a label lookup on
every request; counting into plain ints and converting here costs the scrape instead.

A feature exposes its stats in a few lines (names: `strangler_` prefix, base units,
`_total` for counters, `_seconds` for durations; labels bounded by routes.yaml, never a raw
path or a user)::

    def breaker_metrics(breakers: Breakers) -> Iterator[Metric]:
        yield counter(
            "strangler_breaker_opened_total", "Times a circuit breaker opened.", ["upstream"],
            (((name,), stats.opened) for name, stats in breakers.stats.items()),
        )

    # GatewayApp.__init__:
    self.monitor.metrics.add(lambda: breaker_metrics(self.breakers))

A source runs on the event loop with the request path, so it must not block: read files or
databases before the scrape renders (as the CDC status is), not inside the source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from gateway.base.histogram import Histogram
from gateway.config.reload import RoutesWatcher
from gateway.observe.cdc import CdcSnapshot
from gateway.observe.siblings import Siblings
from gateway.observe.traffic import Traffic
from gateway.shadow.mirror import DROP_REASONS, Mirror
from gateway.shadow.records import COMPARED

MetricSource = Callable[[], Iterable[Metric]]
Values = Iterable[tuple[Sequence[str], float]]


def counter(name: str, documentation: str, labels: Sequence[str], values: Values) -> Metric:
    """A counter family; `name` ends in `_total` (prometheus_client adds it back)."""
    family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def gauge(name: str, documentation: str, labels: Sequence[str], values: Values) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str],
    values: Iterable[tuple[Sequence[str], Histogram]],
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, observed in values:
        buckets = [(_bound(le), float(n)) for le, n in observed.cumulative()]
        family.add_metric(label_values, buckets, observed.total)
    return family


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class Metrics:
    """The registry of sources, rendered on demand; one per app (no global registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._sources: list[MetricSource] = []
        self.registry.register(self)
        # The gateway process itself: CPU seconds, resident memory, open file descriptors.
        ProcessCollector(registry=self.registry)
        self.siblings: Siblings | None = None  # set by the app when there are several workers

    def add(self, source: MetricSource) -> None:
        self._sources.append(source)

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source()

    async def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition the scraper asked for (Prometheus text, or OpenMetrics); with
        several workers, every worker's series (gateway/observe/siblings.py)."""
        encode, content_type = choose_encoder(accept)
        if self.siblings is None:
            return encode(self.registry), content_type
        return encode(await self.siblings.registry_of_all()), content_type


# --- the gateway's own sources -------------------------------------------------------------


def traffic_metrics(traffic: Traffic) -> Iterator[Metric]:
    series = list(traffic.series.items())
    yield counter(
        "strangler_requests_total",
        "Requests answered, by route, upstream and HTTP status.",
        ["route", "upstream", "status"],
        (
            ((route, upstream, str(status)), n)
            for (route, upstream), s in series
            for status, n in sorted(s.statuses.items())
        ),
    )
    yield histogram(
        "strangler_request_duration_seconds",
        "Time from the request's arrival to the response's last byte.",
        ["route", "upstream"],
        (((route, upstream), s.latency) for (route, upstream), s in series),
    )
    yield counter(
        "strangler_authz_decisions_total",
        "Policy decisions: allow, deny, or error (the engine failed; the route's authz_failure"
        " decided).",
        ["route", "decision"],
        (((route, outcome), n) for (route, outcome), n in traffic.decisions().items()),
    )


def shadow_metrics(mirror: Mirror) -> Iterator[Metric]:
    stats = list(mirror.stats.items())
    yield counter(
        "strangler_shadow_mirrored_total",
        "Requests sampled for mirroring to the route's shadow candidate.",
        ["route"],
        (((route,), s.mirrored) for route, s in stats),
    )
    yield counter(
        "strangler_shadow_comparisons_total",
        "Candidate answers by result: identical, noise_only (identical but for noisy fields),"
        " different, status_only (bodies too large to compare), candidate_error.",
        ["route", "result"],
        (
            ((route, result), s.verdict(result))
            for route, s in stats
            for result in (*COMPARED, "candidate_error")
        ),
    )
    yield counter(
        "strangler_shadow_dropped_total",
        "Sampled requests not compared, by reason: gateway_busy (the gateway's loop was busy),"
        " shadow_behind (comparisons in flight or copies unacknowledged at their cap),"
        " worker_down (no shadow worker), body_too_large (a request body over max_body).",
        ["route", "reason"],
        (((route, reason), s.drops[reason]) for route, s in stats for reason in DROP_REASONS),
    )
    yield histogram(
        "strangler_shadow_duration_seconds",
        "The shadow candidate's response time.",
        ["route"],
        (((route,), s.latency) for route, s in stats),
    )


def routes_metrics(watcher: RoutesWatcher) -> Iterator[Metric]:
    table = watcher.table
    yield gauge(
        "strangler_routes_info",
        "The routes.yaml version serving (always 1; the version is the label).",
        ["version"],
        [((table.version,), 1)],
    )
    yield gauge(
        "strangler_routes_loaded_timestamp_seconds",
        "When the serving routes.yaml version was loaded (Unix time).",
        [],
        [((), table.loaded_at)],
    )
    yield gauge(
        "strangler_routes_reload_rejected",
        "1 when the last edit of routes.yaml was rejected (the previous version serves).",
        [],
        [((), 1 if watcher.last_failure is not None else 0)],
    )


CDC_STATES = ("running", "waiting-for-database", "stopped", "crashed")


def cdc_metrics(snapshot: CdcSnapshot) -> Iterator[Metric]:
    if not snapshot.configured:
        return
    yield from _cdc_process_metrics(snapshot)
    yield from _cdc_table_metrics(snapshot)


def _cdc_process_metrics(snapshot: CdcSnapshot) -> Iterator[Metric]:
    """The bridge's process: up, its state and restarts, how fresh its status is."""
    yield gauge(
        "strangler_cdc_up",
        "1 when the CDC bridge's status is fresh and it is running.",
        [],
        [((), 1 if snapshot.up else 0)],
    )
    if snapshot.state is not None:
        yield gauge(
            "strangler_cdc_state",
            "1 for the state the CDC bridge reports: running, waiting-for-database, stopped"
            " (by a signal), crashed.",
            ["state"],
            [((state,), 1 if snapshot.state == state else 0) for state in CDC_STATES],
        )
        yield gauge(
            "strangler_cdc_restarts",
            "Starts of the CDC bridge after a crash since its last clean stop (a crash loop).",
            [],
            [((), snapshot.restarts)],
        )
    if snapshot.age is not None:
        yield gauge(
            "strangler_cdc_status_age_seconds",
            "Seconds since the CDC bridge last wrote its status.",
            [],
            [((), snapshot.age)],
        )


def _cdc_table_metrics(snapshot: CdcSnapshot) -> Iterator[Metric]:
    """Per table: the lag and the events by outcome; the dead-lettered messages."""
    tables = snapshot.tables if snapshot.detail is None else ()  # stale numbers are not lag
    yield gauge(
        "strangler_cdc_lag_seconds",
        "Age of the oldest change not yet applied to the target (0 when none waits).",
        ["table"],
        (((t.table,), t.lag_seconds) for t in tables),
    )
    yield gauge(
        "strangler_cdc_lag_events",
        "Change events published but not yet applied.",
        ["table"],
        (((t.table,), t.lag_events) for t in tables),
    )
    yield counter(
        "strangler_cdc_events_total",
        "Change events by outcome: applied, skipped (already reflected), dead_lettered,"
        " truncated (truncate events applied).",
        ["table", "outcome"],
        (
            ((t.table, outcome), value)
            for t in tables
            for outcome, value in (
                ("applied", t.applied),
                ("skipped", t.skipped),
                ("dead_lettered", t.dead_lettered),
                ("truncated", t.truncates),
            )
        ),
    )
    if snapshot.detail is None:
        # The bridge's own DLQ count (cdc.metrics.Metrics.dead_lettered), whatever the
        # topic: the one series to alert on (issue 5: "the DLQ count is a metric").
        yield counter(
            "strangler_cdc_dead_lettered_total",
            "Messages the CDC bridge sent to its dead-letter topic.",
            [],
            [((), snapshot.dead_lettered)],
        )
