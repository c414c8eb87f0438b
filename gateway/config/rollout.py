"""A route's rollout in routes.yaml: its state, its weighted targets, its promotion gate.

A route moves a feature off the monolith in four states, forward one at a time and back
at any time. The state is derived from what the route says, so the file cannot say one
thing and do another; `state:` may be written too, as a check of the author's intent:

    legacy     the monolith alone                      upstream: legacy
    shadow     the monolith answers, a candidate is    upstream: legacy
               asked too and compared                  shadow: {upstream: search}
    canary     a weighted, sticky share goes to the    upstream: {legacy: 90, search: 10}
               new service
    migrated   a new service alone                     upstream: search

Rules: two or more upstreams with a weight above 0 make a canary; one live upstream with a
`shadow:` block is in shadow when it is the monolith; the monolith alone is legacy, anything
else alone is migrated. The monolith is `rollout: {monolith: NAME}`, else the `default`
upstream (unmatched paths stay with the monolith). A mapping whose weights leave one
upstream live is that upstream alone: `{legacy: 100, search: 0}` is legacy (or shadow).

    rollout:                       # optional, top level
      monolith: legacy
      cookie: strangler_sticky     # the sticky cookie (gateway/rollout/sticky.py)
      cookie_max_age: 30d
      secret_env: STRANGLER_STICKY_SECRET   # the cookie's MAC key; default: random per process
      interval: 10s                # how often evidence is saved and `auto` gates are asked
    routes:
      - name: search
        upstream: {legacy: 90, search: 10}
        state: canary              # optional, checked
        promote: {min_samples: 1000, min_match: 99.5%, max_p99_ratio: 1.2, auto: false,
                  steps: [10, 50]} # the new service's canary shares, in percent
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from functools import cache

from yaml.nodes import Node, ScalarNode

from common.validation import (
    NodeReader,
    non_negative_int,
    parse_duration,
    positive_int,
)
from gateway.config.shadow import ShadowSettings
from gateway.config.split import Split, assignment_order

STATES = ("legacy", "shadow", "canary", "migrated")
DEFAULT_STEPS: tuple[int, ...] = (10,)
DEFAULT_COOKIE = "strangler_sticky"
DEFAULT_MAX_AGE = 30 * 86400
_COOKIE_NAME = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")  # RFC 6265


@cache
def process_secret() -> bytes:
    """The cookie's key when routes.yaml names none: random, the same for every reload of
    this process (other replicas and restarts have their own; see docs/rollout.md)."""
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class PromoteGate:
    """What `strangler routes promote` asks of the evidence before moving a route on."""

    min_samples: int = 1000
    min_match: float = 99.5  # percent
    max_p99_ratio: float = 1.2
    auto: bool = False  # the gateway promotes by itself when the gate is met
    steps: tuple[int, ...] = DEFAULT_STEPS  # canary shares of the new upstream, percent


@dataclass(frozen=True, slots=True)
class RouteRollout:
    state: str = "legacy"
    # the `upstream:` mapping in assignment order; () when `upstream` names one upstream
    weights: tuple[tuple[str, int], ...] = ()
    split: Split | None = None  # only with two or more live upstreams: the hot path hashes then
    promote: PromoteGate | None = None


@dataclass(frozen=True, slots=True)
class StickySettings:
    cookie: str = DEFAULT_COOKIE
    max_age: int = DEFAULT_MAX_AGE  # seconds
    secret: bytes = field(default=b"", repr=False)  # the MAC key of the cookie's value

    @property
    def prefix(self) -> bytes:
        return self.cookie.encode() + b"="


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    monolith: str | None = None
    sticky: StickySettings = field(default_factory=lambda: StickySettings(secret=process_secret()))
    interval: float = 10.0


def read_settings(
    reader: NodeReader, node: Node | None, default: str | None, declared: set[str]
) -> RolloutSettings:
    if node is None:
        return RolloutSettings(monolith=default)
    fields = reader.mapping(
        node, "rollout", {"monolith", "cookie", "cookie_max_age", "secret_env", "interval"}
    )
    if fields is None:
        return RolloutSettings(monolith=default)
    monolith = default
    if "monolith" in fields:
        monolith = reader.scalar(fields["monolith"], "rollout: monolith")
        if monolith is not None and monolith not in declared:
            reader.error(fields["monolith"], f"rollout: monolith: unknown upstream {monolith!r}")
            monolith = None
    cookie = DEFAULT_COOKIE
    if "cookie" in fields:
        cookie = reader.scalar(fields["cookie"], "rollout: cookie") or cookie
        if not set(cookie) <= _COOKIE_NAME:
            reader.error(fields["cookie"], f"rollout: cookie: {cookie!r} is not a cookie name")
    secret = process_secret()
    if "secret_env" in fields:
        name = reader.scalar(fields["secret_env"], "rollout: secret_env")
        value = os.environ.get(name or "", "")
        if name and len(value) < 16:
            reader.error(
                fields["secret_env"],
                f"rollout: secret_env: ${name} must hold a secret of 16 or more characters",
            )
        secret = value.encode() or secret
    max_age = reader.optional(fields, "cookie_max_age", "rollout", _max_age, DEFAULT_MAX_AGE)
    interval = reader.optional(fields, "interval", "rollout", parse_duration, 10.0)
    return RolloutSettings(monolith, StickySettings(cookie, max_age, secret), interval)


def read_upstream(
    reader: NodeReader, node: Node, what: str, declared: set[str], monolith: str | None
) -> tuple[str | None, dict[str, int] | None]:
    """`upstream: NAME` or `upstream: {NAME: WEIGHT, ...}`: (the main upstream, the weights).

    The main upstream of a split (`route.upstream`) has the largest weight; the monolith
    wins a tie."""
    where = f"{what}: upstream"
    if isinstance(node, ScalarNode):
        name = reader.scalar(node, where)
        if name is not None and name not in declared:
            reader.error(node, f"{what}: unknown upstream {name!r}")
        return name, None
    entries = reader.mapping(node, where, None)
    if entries is None:
        return None, None
    weights: dict[str, int] = {}
    for name, value in entries.items():
        if name not in declared:
            reader.error(value, f"{what}: unknown upstream {name!r}")
        weight = reader.converted(value, f"{where}: weight of {name!r}", non_negative_int)
        if weight is not None and name in declared:
            weights[name] = weight
    if not entries:
        reader.error(node, f"{where}: name one upstream, or give two or more weights")
        return None, None
    if len(weights) < len(entries):
        return None, None
    if not any(weights.values()):
        reader.error(node, f"{where}: at least one weight must be above 0")
        return None, None
    main = max(assignment_order(weights, monolith), key=lambda n: weights[n])
    return main, weights


def read_route(
    reader: NodeReader,
    fields: dict[str, Node],
    what: str,
    upstream: str,
    weights: dict[str, int] | None,
    shadow: ShadowSettings | None,
    monolith: str | None,
    salt: str,
) -> RouteRollout:
    """The route's derived state, checked against `state:`, and its promotion gate."""
    ordered = tuple((n, weights[n]) for n in assignment_order(weights, monolith)) if weights else ()
    live = tuple(n for n, w in ordered if w > 0) if ordered else (upstream,)
    state = derive(live, shadow, monolith)
    if shadow is not None and len(live) == 1 and shadow.upstream == live[0]:
        reader.error(fields["shadow"], f"{what}: shadow: {live[0]!r} is the route's own upstream")
    if "state" in fields:
        declared = reader.choice(fields["state"], f"{what}: state", STATES)
        if declared is not None and declared != state:
            reader.error(
                fields["state"],
                f"{what}: state: {declared}, but its targets make it {state} "
                f"({explain(live, shadow, monolith)})",
            )
    gate = read_gate(reader, fields["promote"], what) if "promote" in fields else None
    if gate is not None:
        named = {n for n, _ in ordered} | {upstream} | ({shadow.upstream} if shadow else set())
        if monolith is None:
            reader.error(
                fields["promote"],
                f"{what}: promote needs the monolith: set rollout: {{monolith: NAME}} or default",
            )
        elif len(named - {monolith}) > 1:
            others = ", ".join(sorted(named - {monolith}))
            reader.error(
                fields["promote"],
                f"{what}: promote moves a route between the monolith and one new upstream; "
                f"this one names {others}",
            )
    split = None
    if len(live) > 1 and weights is not None:
        split = Split.of(weights, monolith, salt.encode()[:64])
    return RouteRollout(state, ordered, split, gate)


def derive(live: tuple[str, ...], shadow: ShadowSettings | None, monolith: str | None) -> str:
    if len(live) > 1:
        return "canary"
    if shadow is not None and (monolith is None or live[0] == monolith):
        return "shadow"
    return "legacy" if live[0] == monolith else "migrated"


def explain(live: tuple[str, ...], shadow: ShadowSettings | None, monolith: str | None) -> str:
    if len(live) > 1:
        return f"{len(live)} upstreams with weights above 0"
    if shadow is not None and (monolith is None or live[0] == monolith):
        return f"{live[0]!r} answers, {shadow.upstream!r} is shadowed"
    if live[0] == monolith:
        return f"only the monolith {monolith!r}"
    if monolith is None:
        return f"only {live[0]!r}, and no monolith is set (rollout: {{monolith: NAME}})"
    return f"only {live[0]!r}, not the monolith {monolith!r}"


def read_gate(reader: NodeReader, node: Node, what: str) -> PromoteGate | None:
    where = f"{what}: promote"
    fields = reader.mapping(
        node, where, {"min_samples", "min_match", "max_p99_ratio", "auto", "steps"}
    )
    if fields is None:
        return None
    auto = False
    if "auto" in fields:
        auto = reader.choice(fields["auto"], f"{where}: auto", ("true", "false")) == "true"
    steps = DEFAULT_STEPS
    if "steps" in fields:
        items = reader.sequence(fields["steps"], f"{where}: steps")
        values = [reader.converted(i, f"{where}: steps", _step) for i in items]
        if not items:
            reader.error(fields["steps"], f"{where}: steps: give at least one share")
        elif None not in values:
            steps = tuple(v for v in values if v is not None)
            if list(steps) != sorted(set(steps)):
                reader.error(fields["steps"], f"{where}: steps must increase")
    return PromoteGate(
        min_samples=reader.optional(fields, "min_samples", where, positive_int, 1000),
        min_match=reader.optional(fields, "min_match", where, _percent, 99.5),
        max_p99_ratio=reader.optional(fields, "max_p99_ratio", where, _ratio, 1.2),
        auto=auto,
        steps=steps,
    )


def targets_text(route_upstream: str, rollout: RouteRollout) -> str:
    """`legacy`, or `legacy 90% / search 10%` for a split (shares of the total)."""
    if not rollout.weights:
        return route_upstream
    total = sum(w for _, w in rollout.weights)
    return " / ".join(f"{n} {_pct(100 * w / total)}" for n, w in rollout.weights)


def gate_text(gate: PromoteGate) -> str:
    steps = "/".join(map(str, gate.steps))
    auto = ", auto" if gate.auto else ""
    return (
        f"{gate.min_samples} samples, {gate.min_match}% match, p99 x{gate.max_p99_ratio},"
        f" canary steps {steps}%{auto}"
    )


def _pct(value: float) -> str:
    return f"{value:.0f}%" if value == int(value) else f"{value:.1f}%"


def _percent(text: str) -> float:
    if not text.endswith("%"):
        raise ValueError(f"{text!r}: write a percentage such as 99.5%")
    value = float(text[:-1])
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r} must be between 0% and 100%")
    return value


def _step(text: str) -> int:
    value = text.removesuffix("%")
    if not value.isdigit() or not 1 <= int(value) <= 99:
        raise ValueError(f"{text!r}: a canary share is a whole percentage from 1 to 99")
    return int(value)


def _ratio(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text!r} must be above 0")
    return value


def _max_age(text: str) -> int:
    seconds = parse_duration(text)
    if seconds < 1:
        raise ValueError(f"{text!r} must be at least 1s")
    return int(seconds)
