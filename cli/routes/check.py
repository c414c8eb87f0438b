"""`strangler routes check [FILE]`: validate a routes file and print what it resolves to:
the routes and where they forward, each route's rollout state, authorization, shadows,
the store, rate limits and idempotency keys."""

from __future__ import annotations

import argparse
import sys

from cli.table import load_table
from gateway.config.rollout import gate_text, targets_text
from gateway.config.shadow import SAFE_METHODS
from gateway.config.table import RouteTable, limits_summary


def routes_check(ns: argparse.Namespace) -> int:
    table = load_table(ns.file)
    if table is None:
        return 1
    print(f"{table.source}: OK, version {table.version}")
    print(*_columns(_forwarding(table)), sep="\n")
    print(*state_lines(table), sep="\n")
    authz = table.authz
    print(f"authz: {authz.engine} ({authz.policies or authz.url})" if authz else "authz: none")
    _print_shadows(table)
    lines, warnings = limits_summary(table)  # store, rate limits, idempotency keys
    for line in lines:
        print(line)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0


def _forwarding(table: RouteTable) -> list[tuple[str, ...]]:
    """One row per route and one for the default: where its requests go."""
    rows: list[tuple[str, ...]] = [("ROUTE", "PATH", "METHODS", "AUTH", "UPSTREAM", "FORWARDS TO")]
    for route in table.routes:
        upstream = table.upstreams[route.upstream]
        target = upstream.url + (route.rewrite or route.path)
        methods = ",".join(sorted(route.methods)) if route.methods else "*"
        if route.rollout.split is not None:  # a canary: every live upstream
            target = ", ".join(
                table.upstreams[n].url + (route.rewrite or route.path)
                for n in route.rollout.split.live
            )
        rows.append(
            (route.name, route.path, methods, table.auth_mode(route), route.upstream, target)
        )
    default = table.default
    rows.append(
        (
            "(default)",
            "/",
            "*",
            table.auth.default,
            default or "-",
            table.upstreams[default].url if default else "404 no_route",
        )
    )
    return rows


def state_lines(table: RouteTable) -> list[str]:
    """One line per route: its state, its targets and its gate."""
    rows: list[tuple[str, ...]] = [("STATE", "ROUTE", "TARGETS", "PROMOTE")]
    for route in table.routes:
        targets = targets_text(route.upstream, route.rollout)
        if route.shadow is not None:
            targets += f", shadow {route.shadow.upstream}"
        gate = route.rollout.promote
        rows.append((route.rollout.state, route.name, targets, gate_text(gate) if gate else "-"))
    return _columns(rows)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """The rows as aligned columns; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def _print_shadows(table: RouteTable) -> None:
    for route in table.routes:
        if route.shadow is None:
            continue
        shadow = route.shadow
        methods = ",".join(sorted(shadow.methods))
        print(f"shadow: {route.name} -> {shadow.upstream} ({shadow.sample:.0%} of {methods})")
        if shadow.methods - SAFE_METHODS:
            print(
                f"warning: route {route.name!r} mirrors writes to {shadow.upstream!r}: the "
                "candidate must not share state with the primary, or data changes twice",
                file=sys.stderr,
            )
