"""The resilience settings in routes.yaml: timeouts, retries, circuit breakers, load shedding.

    load_shedding:                # the whole gateway
      max_in_flight: 1000
      reserve: {critical: 20%, normal: 30%}
    upstreams:
      legacy:
        url: http://127.0.0.1:8001
        timeout: 5s               # (gateway.config.routes) idle: pool wait, each wait for body data
        connect_timeout: 1s       # (gateway.config.routes) the TCP connect
        first_byte_timeout: 3s    # request sent -> response head; default: timeout
        deadline: 30s             # the whole exchange, retries and backoff included
        max_in_flight: 100        # default: pool
        retries: {attempts: 2, backoff: 25ms, max_backoff: 1s, budget: 20%, min_per_second: 3}
        breaker: {failure_rate: 50%, minimum_calls: 20, window: 10s, cool_down: 10s, probes: 3}
    routes:
      - name: reports
        path: /reports
        upstream: legacy
        priority: background      # critical | normal | background
        deadline: 2m              # per-route overrides of the four timeouts
        retries: {attempts: 3, methods: [GET, PUT]}   # or: retries: off

`retries: off` and `breaker: off` turn either off for an upstream (or a route's retries).
A breaker's `window` is at least 1s (ten buckets, moved along every 100 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from yaml.nodes import Node, ScalarNode

from common.validation import (
    NodeReader,
    parse_duration,
    parse_share,
    positive_duration,
    positive_int,
)

PRIORITIES = ("critical", "normal", "background")
RETRIED_BY_DEFAULT = frozenset({"GET", "HEAD", "OPTIONS"})
RETRIED_ON_REQUEST = frozenset({"PUT", "DELETE"})  # idempotent, but only if a route says so
DEFAULT_DEADLINE = 60.0
DEFAULT_MAX_IN_FLIGHT = 1000

UPSTREAM_KEYS = frozenset({"first_byte_timeout", "deadline", "max_in_flight", "retries", "breaker"})
ROUTE_KEYS = frozenset(
    {"priority", "timeout", "connect_timeout", "first_byte_timeout", "deadline", "retries"}
)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    attempts: int = 2  # tries in all, the first included; 1: no retries
    backoff: float = 0.025  # base of the exponential backoff (full jitter)
    max_backoff: float = 1.0
    budget: float = 0.2  # retries may be at most this share of requests ...
    min_per_second: float = 3.0  # ... plus this many a second (so a quiet upstream can retry)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    enabled: bool = True
    failure_rate: float = 0.5  # opens at this share of failed calls in the window ...
    minimum_calls: int = 20  # ... once the window holds this many calls
    window: float = 10.0  # seconds of calls the failure rate is taken over
    cool_down: float = 10.0  # open this long before letting probes through
    probes: int = 3  # half-open: this many calls; all succeed -> closed, one fails -> open


@dataclass(frozen=True, slots=True)
class UpstreamResilience:
    first_byte_timeout: float | None = None  # None: the upstream's `timeout`
    deadline: float = DEFAULT_DEADLINE
    max_in_flight: int | None = None  # None: the upstream's `pool`
    retries: RetrySettings = field(default_factory=RetrySettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)


@dataclass(frozen=True, slots=True)
class RouteResilience:
    priority: str = "normal"
    timeout: float | None = None  # each None: the upstream's value
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    deadline: float | None = None
    attempts: int | None = None  # None: the upstream's retries.attempts
    retry_methods: frozenset[str] = RETRIED_BY_DEFAULT


@dataclass(frozen=True, slots=True)
class Shedding:
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    reserve_critical: float = 0.2  # the top share of every limit only critical routes may use
    reserve_normal: float = 0.3  # the next share, which background routes may not use

    def cap(self, limit: int, priority: str) -> int:
        """How many may be in flight when a request of `priority` is still admitted."""
        if priority == "critical":
            return limit
        reserved = self.reserve_critical
        if priority == "background":
            reserved += self.reserve_normal
        return int(limit * (1 - reserved))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The effective timeouts of one route to one upstream, in seconds."""

    connect: float
    first_byte: float
    idle: float  # a free pooled connection; each wait for more response body bytes
    deadline: float  # the whole exchange from the first attempt, retries included


class TimedUpstream(Protocol):
    """What `timeouts` reads of an upstream (gateway.config.routes.Upstream, which holds
    this module's settings: this module cannot import it back)."""

    @property
    def timeout(self) -> float: ...

    @property
    def connect_timeout(self) -> float: ...

    @property
    def resilience(self) -> UpstreamResilience: ...


def timeouts(upstream: TimedUpstream, route: RouteResilience | None = None) -> Timeouts:
    own = upstream.resilience
    override = route or RouteResilience()
    idle = override.timeout if override.timeout is not None else upstream.timeout
    first_byte = override.first_byte_timeout or own.first_byte_timeout or idle
    return Timeouts(
        connect=override.connect_timeout or upstream.connect_timeout,
        first_byte=first_byte,
        idle=idle,
        deadline=override.deadline or own.deadline,
    )


def read_upstream(reader: NodeReader, fields: dict[str, Node], what: str) -> UpstreamResilience:
    """The resilience keys of one upstream's mapping (gateway.config.routes reads the others)."""
    retries = RetrySettings()
    if "retries" in fields:
        retries = _retries(reader, fields["retries"], f"{what}: retries")
    breaker = BreakerSettings()
    if "breaker" in fields:
        breaker = _breaker(reader, fields["breaker"], f"{what}: breaker")
    return UpstreamResilience(
        first_byte_timeout=reader.optional(
            fields, "first_byte_timeout", what, positive_duration, None
        ),
        deadline=reader.optional(fields, "deadline", what, positive_duration, DEFAULT_DEADLINE),
        max_in_flight=reader.optional(fields, "max_in_flight", what, positive_int, None),
        retries=retries,
        breaker=breaker,
    )


def read_route(reader: NodeReader, fields: dict[str, Node], what: str) -> RouteResilience:
    """The resilience keys of one route's mapping."""
    priority = "normal"
    if "priority" in fields:
        priority = reader.choice(fields["priority"], f"{what}: priority", PRIORITIES) or priority
    attempts, methods = None, RETRIED_BY_DEFAULT
    if "retries" in fields:
        attempts, methods = _route_retries(reader, fields["retries"], f"{what}: retries")
    durations = {
        key: reader.optional(fields, key, what, positive_duration, None)
        for key in ("timeout", "connect_timeout", "first_byte_timeout", "deadline")
    }
    return RouteResilience(priority, **durations, attempts=attempts, retry_methods=methods)


def read_shedding(reader: NodeReader, node: Node) -> Shedding:
    what = "load_shedding"
    fields = reader.mapping(node, what, {"max_in_flight", "reserve"})
    if fields is None:
        return Shedding()
    defaults = Shedding()
    critical, normal = defaults.reserve_critical, defaults.reserve_normal
    if "reserve" in fields:
        reserve = reader.mapping(fields["reserve"], f"{what}: reserve", {"critical", "normal"})
        if reserve is not None:
            where = f"{what}: reserve"
            critical = reader.optional(reserve, "critical", where, parse_share, critical)
            normal = reader.optional(reserve, "normal", where, parse_share, normal)
            if critical + normal >= 1:
                reader.error(fields["reserve"], f"{where}: critical + normal must be under 100%")
    return Shedding(
        max_in_flight=reader.optional(
            fields, "max_in_flight", what, positive_int, DEFAULT_MAX_IN_FLIGHT
        ),
        reserve_critical=critical,
        reserve_normal=normal,
    )


def _is_off(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.value == "off"


def _retries(reader: NodeReader, node: Node, what: str) -> RetrySettings:
    if _is_off(node):
        return RetrySettings(attempts=1)
    fields = reader.mapping(
        node, what, {"attempts", "backoff", "max_backoff", "budget", "min_per_second"}
    )
    if fields is None:
        return RetrySettings()
    defaults = RetrySettings()
    return RetrySettings(
        attempts=reader.optional(fields, "attempts", what, positive_int, defaults.attempts),
        backoff=reader.optional(fields, "backoff", what, parse_duration, defaults.backoff),
        max_backoff=reader.optional(
            fields, "max_backoff", what, parse_duration, defaults.max_backoff
        ),
        budget=reader.optional(fields, "budget", what, parse_share, defaults.budget),
        min_per_second=reader.optional(
            fields, "min_per_second", what, _non_negative, defaults.min_per_second
        ),
    )


def _route_retries(reader: NodeReader, node: Node, what: str) -> tuple[int | None, frozenset[str]]:
    if _is_off(node):
        return 1, RETRIED_BY_DEFAULT
    fields = reader.mapping(node, what, {"attempts", "methods"})
    if fields is None:
        return None, RETRIED_BY_DEFAULT
    attempts = reader.optional(fields, "attempts", what, positive_int, None)
    if "methods" not in fields:
        return attempts, RETRIED_BY_DEFAULT
    methods: set[str] = set()
    for item in reader.sequence(fields["methods"], f"{what}: methods"):
        method = (reader.scalar(item, f"{what}: methods") or "").upper()
        if method in RETRIED_BY_DEFAULT | RETRIED_ON_REQUEST:
            methods.add(method)
        elif method:
            reader.error(item, f"{what}: {method} is not idempotent and is never retried")
    if "GET" in methods:
        methods.add("HEAD")
    return attempts, frozenset(methods)


def _breaker(reader: NodeReader, node: Node, what: str) -> BreakerSettings:
    if _is_off(node):
        return BreakerSettings(enabled=False)
    fields = reader.mapping(
        node, what, {"failure_rate", "minimum_calls", "window", "cool_down", "probes"}
    )
    if fields is None:
        return BreakerSettings()
    defaults = BreakerSettings()
    return BreakerSettings(
        failure_rate=reader.optional(
            fields, "failure_rate", what, _positive_share, defaults.failure_rate
        ),
        minimum_calls=reader.optional(
            fields, "minimum_calls", what, positive_int, defaults.minimum_calls
        ),
        window=reader.optional(fields, "window", what, _window, defaults.window),
        cool_down=reader.optional(fields, "cool_down", what, positive_duration, defaults.cool_down),
        probes=reader.optional(fields, "probes", what, positive_int, defaults.probes),
    )


def _window(text: str) -> float:
    # Ten buckets, moved along every 100 ms (gateway.resilience.exchange.TICK): at least 1 s.
    value = parse_duration(text)
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1s")
    return value


def _positive_share(text: str) -> float:
    value = parse_share(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value
