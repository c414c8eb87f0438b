"""What an edit of routes.yaml changes, before it is saved: `strangler routes diff OLD NEW`.

Pure: two validated tables in, lines of text out. Routes are matched by name. For each
route it says which state it moves to, which upstreams serve it before and after, and for
splits exactly which share of its users changes upstream (gateway/config/split.py: a user's point
is fixed, so the share that moves is the overlap of the two layouts, not an estimate).
Added and removed routes say where their paths went before and go after.
"""

from __future__ import annotations

from dataclasses import fields

from gateway.config.rollout import targets_text
from gateway.config.routes import Route
from gateway.config.split import Split, moves
from gateway.config.table import RouteTable

_COMPARED = ("url", "timeout", "connect_timeout", "pool", "ca", "client_cert", "client_key")


def diff(old: RouteTable, new: RouteTable) -> list[str]:
    lines = _upstreams(old, new) + _table(old, new)
    before = {route.name: route for route in old.routes}
    after = {route.name: route for route in new.routes}
    for route in new.routes:
        if route.name in before:
            lines += _changed(old, before[route.name], new, route)
        else:
            lines += _added(old, route)
    for route in old.routes:
        if route.name not in after:
            lines += _removed(new, route)
    return lines or ["no changes"]


def _upstreams(old: RouteTable, new: RouteTable) -> list[str]:
    lines = []
    for name in sorted(old.upstreams.keys() | new.upstreams.keys()):
        a, b = old.upstreams.get(name), new.upstreams.get(name)
        if a is None and b is not None:
            lines.append(f"upstream {name}: added ({b.url})")
        elif b is None and a is not None:
            lines.append(f"upstream {name}: removed (was {a.url})")
        elif a is not None and b is not None:
            changed = [
                f"{key} {getattr(a, key)} -> {getattr(b, key)}"
                for key in _COMPARED
                if getattr(a, key) != getattr(b, key)
            ]
            if changed:
                lines.append(f"upstream {name}: {', '.join(changed)}")
    return lines


def _table(old: RouteTable, new: RouteTable) -> list[str]:
    lines = []
    if old.default != new.default:
        lines.append(
            f"default: {old.default or 'none (404)'} -> {new.default or 'none (404)'}:"
            " unmatched paths move"
        )
    if old.rollout.monolith != new.rollout.monolith:
        lines.append(f"monolith: {old.rollout.monolith} -> {new.rollout.monolith}")
    if old.rollout.sticky != new.rollout.sticky:
        lines.append(
            "rollout: the sticky cookie's settings change (users without a token"
            " may be assigned again)"
        )
    for section in ("auth", "authz", "shadow_store", "max_body", "trusted_proxies"):
        if getattr(old, section) != getattr(new, section):
            lines.append(f"{section}: changed")
    return lines


def _changed(old: RouteTable, a: Route, new: RouteTable, b: Route) -> list[str]:
    head = f"route {b.name} ({b.path})"
    lines = []
    if a.path != b.path:
        lines.append(f"{head}: path {a.path} -> {b.path}")
    if a.methods != b.methods:
        lines.append(f"{head}: methods {_methods(a)} -> {_methods(b)}")
    if a.rollout.state != b.rollout.state:
        lines.append(f"{head}: state {a.rollout.state} -> {b.rollout.state}")
    before, after = _targets(a), _targets(b)
    if before != after:
        moved = moves(_split(old, a), _split(new, b))
        who = "; ".join(f"{share:.1%} of users move {x} -> {y}" for x, y, share in moved)
        lines.append(f"{head}: upstream {before} -> {after}" + (f": {who}" if who else ""))
    shadow_a = a.shadow.upstream if a.shadow else None
    shadow_b = b.shadow.upstream if b.shadow else None
    if shadow_a != shadow_b:
        lines.append(f"{head}: shadow {shadow_a or 'none'} -> {shadow_b or 'none'}")
    elif a.shadow != b.shadow:
        lines.append(f"{head}: shadow settings changed")
    if a.rollout.promote != b.rollout.promote:
        lines.append(f"{head}: promotion gate changed")
    others = [
        f.name
        for f in fields(Route)
        if f.name not in ("name", "path", "methods", "upstream", "shadow", "line", "rollout")
        and getattr(a, f.name) != getattr(b, f.name)
    ]
    if others:
        lines.append(f"{head}: {', '.join(others)} changed")
    return lines


def _added(old: RouteTable, route: Route) -> list[str]:
    was = _served_by(old, route)
    return [
        f"route {route.name} ({route.path}): added, {route.rollout.state}, {_targets(route)};"
        f" its paths were served by {was}"
    ]


def _removed(new: RouteTable, route: Route) -> list[str]:
    goes = _served_by(new, route)
    return [
        f"route {route.name} ({route.path}): removed (was {route.rollout.state},"
        f" {_targets(route)}); its paths go to {goes}"
    ]


def _served_by(table: RouteTable, route: Route) -> str:
    """Who serves `route`'s paths in `table`: a longest-prefix probe with its path."""
    method = sorted(route.methods)[0] if route.methods else "GET"
    other = table.match(route.path, method)
    if other is not None:
        return f"route {other.name} ({_targets(other)})"
    return f"the default ({table.default})" if table.default else "nothing (404)"


def _targets(route: Route) -> str:
    return targets_text(route.upstream, route.rollout)


def _split(table: RouteTable, route: Route) -> Split:
    weights = dict(route.rollout.weights) or {route.upstream: 1}
    return Split.of(weights, table.rollout.monolith, route.name.encode()[:64])


def _methods(route: Route) -> str:
    return ",".join(sorted(route.methods)) if route.methods else "*"
