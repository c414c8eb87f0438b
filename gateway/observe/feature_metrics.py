"""The `/metrics` sources of resilience, rate limits and idempotency, and the canary.

Each function reads a feature's plain stats objects at scrape time (gateway/observe/metrics.py says
how a source works) and yields Prometheus families; nothing here runs per request. Labels
are upstream and route names from routes.yaml, so the number of series stays bounded.

Series a feature's configuration implies are exported from the first scrape, at 0 where
nothing happened yet: `rate()` and `increase()` need a series before its first increment
to see that increment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import fields

from prometheus_client.metrics_core import Metric

from gateway.config.limits import FAILURE_MODES, FailurePolicy
from gateway.config.resilience import PRIORITIES
from gateway.config.rollout import STATES
from gateway.config.table import RouteTable
from gateway.limits.gate import LimitStats
from gateway.observe.metrics import counter, gauge
from gateway.resilience.breaker import CircuitBreaker, State
from gateway.resilience.exchange import Resilience, UpstreamState
from gateway.rollout.assignment import Assigner
from gateway.rollout.consistency import Consistency
from gateway.rollout.evidence import LiveEvidence

# What a request with an Idempotency-Key met (one each); LimitStats' other idempotency
# outcomes say what became of the claims that ran.
KEY_REQUEST_OUTCOMES = ("claimed", "replayed", "conflict", "mismatch", "not_kept")
RATE_LIMIT_DECISIONS = ("allowed", "limited")
STORE_FEATURES = tuple(f.name for f in fields(FailurePolicy))  # rate_limit, idempotency, ...
_States = list[tuple[str, UpstreamState]]  # (upstream name, its state), the serving table's


def resilience_metrics(resilience: Resilience, table: RouteTable) -> Iterator[Metric]:
    """Per upstream of the serving table: bulkhead, breaker, attempts and retries."""
    states = [(u.name, resilience.state(u)) for u in table.upstreams.values()]
    yield from _load_metrics(resilience, table, states)
    yield from _attempt_metrics(states)
    yield from _breaker_metrics([(name, s.breaker) for name, s in states if s.breaker is not None])


def _load_metrics(resilience: Resilience, table: RouteTable, states: _States) -> Iterator[Metric]:
    """In flight and shed, gateway-wide and per upstream."""
    yield gauge(
        "strangler_gateway_in_flight",
        "Requests in flight to any upstream.",
        [],
        [((), resilience.gateway.in_flight)],
    )
    yield gauge(
        "strangler_gateway_in_flight_limit",
        "load_shedding.max_in_flight: the gateway-wide cap (critical routes may fill it).",
        [],
        [((), table.shedding.max_in_flight)],
    )
    yield counter(
        "strangler_gateway_shed_total",
        "Requests refused (503 overloaded) at the gateway-wide limit, by route priority.",
        ["priority"],
        (((p,), resilience.gateway.shed[p]) for p in PRIORITIES),
    )
    yield gauge(
        "strangler_upstream_in_flight",
        "Requests in flight to the upstream.",
        ["upstream"],
        (((name,), s.bulkhead.in_flight) for name, s in states),
    )
    yield gauge(
        "strangler_upstream_in_flight_limit",
        "The upstream's max_in_flight (critical routes may fill it).",
        ["upstream"],
        (((name,), s.max_in_flight) for name, s in states),
    )
    yield counter(
        "strangler_upstream_shed_total",
        "Requests refused (503 overloaded) at the upstream's limit, by route priority.",
        ["upstream", "priority"],
        (((name, p), s.bulkhead.shed[p]) for name, s in states for p in PRIORITIES),
    )


def _attempt_metrics(states: _States) -> Iterator[Metric]:
    """Requests, attempts and their failures, retries sent and denied, per upstream."""
    for field, what in (
        ("requests", "Requests admitted to the upstream (each may make several attempts)."),
        ("attempts", "Attempts sent to the upstream, retries included."),
        (
            "failures",
            "Failed attempts, as the breaker judges them (connect errors, timeouts,"
            " dropped connections, invalid heads, 502/503/504).",
        ),
        ("timeouts", "Attempts that ended in a timeout."),
    ):
        yield counter(
            f"strangler_upstream_{field}_total",
            what,
            ["upstream"],
            (((name,), getattr(s.stats, field)) for name, s in states),
        )
    yield counter(
        "strangler_upstream_retries_total",
        "Retries sent to the upstream.",
        ["upstream"],
        (((name,), s.budget.stats.retried) for name, s in states),
    )
    yield counter(
        "strangler_upstream_retries_denied_total",
        "Retries the upstream's retry budget refused (the failure went to the client).",
        ["upstream"],
        (((name,), s.budget.stats.denied) for name, s in states),
    )


def _breaker_metrics(breakers: list[tuple[str, CircuitBreaker]]) -> Iterator[Metric]:
    """The circuit breakers' states, failure ratios, openings and refusals."""
    yield gauge(
        "strangler_breaker_state",
        "The upstream's circuit breaker: 1 for the state it is in, 0 for the others"
        " (no series with breaker: off).",
        ["upstream", "state"],
        (
            ((name, state.value), 1 if breaker.current() is state else 0)
            for name, breaker in breakers
            for state in State
        ),
    )
    yield gauge(
        "strangler_breaker_failure_ratio",
        "Share of failed calls in the breaker's window (it opens at failure_rate).",
        ["upstream"],
        (((name,), breaker.failure_rate()) for name, breaker in breakers),
    )
    yield counter(
        "strangler_breaker_opened_total",
        "Times the upstream's circuit breaker opened.",
        ["upstream"],
        (((name,), breaker.stats.opened) for name, breaker in breakers),
    )
    yield counter(
        "strangler_breaker_rejected_total",
        "Calls the breaker refused (503 circuit_open) while open or with its probes taken.",
        ["upstream"],
        (((name,), breaker.stats.rejected) for name, breaker in breakers),
    )


def limits_metrics(stats: LimitStats, table: RouteTable) -> Iterator[Metric]:
    """Rate-limit decisions, idempotency outcomes, the shared store's failures and health."""
    implied: list[tuple[str, str, str]] = []  # by the serving table, at 0 until counted
    for route in table.routes:
        if route.limits is not None and route.limits.rate_limit is not None:
            implied += [("rate_limit", route.name, d) for d in RATE_LIMIT_DECISIONS]
        if route.limits is not None and route.limits.idempotency is not None:
            implied += [("idempotency", route.name, o) for o in KEY_REQUEST_OUTCOMES]
    counts = Counter(dict.fromkeys(implied, 0))
    counts.update(stats.counts)
    failures: Counter[tuple[str, str]] = Counter(
        {(f, m): 0 for f in STORE_FEATURES for m in FAILURE_MODES}
    )
    limited, requests, claims = [], [], []
    for (feature, name, outcome), n in sorted(counts.items()):
        if outcome.startswith("failed_"):
            failures[(feature, outcome.removeprefix("failed_"))] += n
        elif feature == "rate_limit":
            limited.append(((name, outcome), n))
        elif outcome in KEY_REQUEST_OUTCOMES:
            requests.append(((name, outcome), n))
        else:
            claims.append(((name, outcome), n))
    yield counter(
        "strangler_rate_limit_decisions_total",
        "Rate-limit checks: allowed, or limited (429).",
        ["route", "decision"],
        limited,
    )
    yield counter(
        "strangler_idempotency_requests_total",
        "Requests with an Idempotency-Key: claimed (ran), replayed, conflict (409, still"
        " running), mismatch (422, another request), not_kept (409, answer was too large).",
        ["route", "outcome"],
        requests,
    )
    yield counter(
        "strangler_idempotency_claims_total",
        "What became of claimed keys: kept, kept_head_only (over max_response), released"
        " (not kept, so a retry runs), lock_expired, store_error (keeping or releasing failed).",
        ["route", "outcome"],
        claims,
    )
    yield counter(
        "strangler_store_failures_total",
        "Requests that met an unavailable shared store, by feature and the failure policy"
        " applied: open (served without the feature) or closed (503 store_unavailable).",
        ["feature", "mode"],
        sorted(failures.items()),
    )
    health = stats.health
    yield gauge(
        "strangler_store_up",
        "1 while the shared store answers (memory: always).",
        ["backend"],
        [((health.backend,), 1 if health.up else 0)],
    )


def rollout_metrics(
    assigner: Assigner, evidence: LiveEvidence, table: RouteTable
) -> Iterator[Metric]:
    """Route states and shares from the table; split picks and overrides from the assigner.

    Who answered is strangler_requests_total's `upstream`; the evidence's own per-upstream
    counts say the same for split routes, so only its start is exported here."""
    yield from _route_metrics(evidence, table)
    yield from _assignment_metrics(assigner, table)


def _route_metrics(evidence: LiveEvidence, table: RouteTable) -> Iterator[Metric]:
    """Each route's state and shares, and when its evidence started."""
    yield gauge(
        "strangler_route_state",
        "The route's migration state: 1 for the state it is in, 0 for the others.",
        ["route", "state"],
        (
            ((route.name, state), 1 if route.rollout.state == state else 0)
            for route in table.routes
            for state in STATES
        ),
    )
    shares = []
    for route in table.routes:
        weights = route.rollout.weights or ((route.upstream, 1),)
        total = sum(w for _, w in weights)
        shares += [((route.name, name), w / total) for name, w in weights]
    yield gauge(
        "strangler_route_weight_ratio",
        "Share of the route's users assigned to each upstream (1 for a single upstream).",
        ["route", "upstream"],
        shares,
    )
    yield gauge(
        "strangler_rollout_evidence_since_timestamp_seconds",
        "When a shadow or canary route took its current shape (state, weights, candidate):"
        " its promotion gate counts evidence from then (Unix time).",
        ["route"],
        (((route,), epoch.started) for route, epoch in evidence.epochs.items()),
    )


def _assignment_metrics(assigner: Assigner, table: RouteTable) -> Iterator[Metric]:
    """The split routes' sticky picks, the overrides and the cookies set."""
    picks: Counter[tuple[str, str]] = Counter()
    for route in table.routes:
        if route.rollout.split is not None:
            picks.update({(route.name, n): 0 for n, w in route.rollout.weights if w > 0})
    stats = sorted(assigner.stats.items())
    picks.update({(route, n): c for route, s in stats for n, c in s.assigned.items()})
    yield counter(
        "strangler_split_assignments_total",
        "Requests a split route's sticky assignment sent to each upstream (before overrides).",
        ["route", "upstream"],
        sorted(picks.items()),
    )
    yield counter(
        "strangler_target_overrides_total",
        "X-Strangler-Target overrides honoured (the policy allowed the caller), by upstream.",
        ["route", "upstream"],
        (((route, n), c) for route, s in stats for n, c in sorted(s.overrides.items())),
    )
    yield counter(
        "strangler_target_overrides_ignored_total",
        "X-Strangler-Target headers ignored: the policy does not let the caller choose.",
        ["route"],
        (((route,), s.overrides_ignored) for route, s in stats),
    )
    yield counter(
        "strangler_sticky_cookies_set_total",
        "Sticky-assignment cookies set for callers with neither a token nor the cookie.",
        ["route"],
        (((route,), s.cookies_set) for route, s in stats),
    )


def consistency_metrics(consistency: Consistency) -> Iterator[Metric]:
    stats = consistency.stats
    yield counter(
        "strangler_ryw_pins_total",
        "Writes that pinned their user to the monolith, by how the pin ends.",
        ["kind"],
        (((kind,), n) for kind, n in stats.pins.items()),
    )
    reads: list[tuple[tuple[str, str], int]] = [
        *(((route, "pinned"), n) for route, n in stats.pinned.items()),
        *(((route, "released"), n) for route, n in stats.released.items()),
    ]
    yield counter(
        "strangler_ryw_reads_total",
        "Reads of pinned users: sent to the monolith, or let through once applied.",
        ["route", "outcome"],
        reads,
    )
    yield counter(
        "strangler_ryw_store_failures_total",
        "Pin lookups (read) and pin writes (write) the shared store failed.",
        ["operation"],
        (((op,), n) for op, n in stats.store_failures.items()),
    )
    ages = []
    settings = consistency.settings
    for fed in settings.upstreams.values() if settings is not None else ():
        watermark = consistency.watermarks.get(fed.source) if fed.source else None
        if watermark is not None and watermark.stats.read_at is not None:
            ages.append(((fed.name,), consistency.clock() - watermark.stats.read_at))
    yield gauge(
        "strangler_ryw_positions_age_seconds",
        "Seconds since the CDC positions of an upstream were last read (only while pinned).",
        ["upstream"],
        ages,
    )
