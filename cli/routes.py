"""`strangler routes diff | promote | rollback`, and the states `routes check` prints."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.validation import ConfigError
from gateway.config import table as config
from gateway.config.rollout import gate_text, targets_text
from gateway.config.table import RouteTable

if TYPE_CHECKING:  # sqlalchemy comes with promotion: imported when a command runs, not at start
    from gateway.rollout.promotion import Promotion


def register(routes_sub: Any, routes_file: str) -> None:
    diff = routes_sub.add_parser(
        "diff", help="what an edit changes: paths that move, shares, states, routes"
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(handler=routes_diff)
    for name, help_text in (
        ("promote", "move a route one step forward if its evidence meets its gate"),
        ("rollback", "move a route one step back (no gate)"),
    ):
        command = routes_sub.add_parser(name, help=help_text)
        command.add_argument("route")
        command.add_argument("--routes", default=routes_file, help="the routes file to edit")
        command.add_argument("--dry-run", action="store_true", help="judge and edit, not write")
        if name == "promote":
            command.add_argument("--to", help="from legacy: the upstream to shadow")
        command.set_defaults(handler=routes_step, backwards=name == "rollback")


def state_lines(table: RouteTable) -> list[str]:
    """One line per route: its state, its targets and its gate."""
    rows = [("STATE", "ROUTE", "TARGETS", "PROMOTE")]
    for route in table.routes:
        targets = targets_text(route.upstream, route.rollout)
        if route.shadow is not None:
            targets += f", shadow {route.shadow.upstream}"
        gate = route.rollout.promote
        rows.append((route.rollout.state, route.name, targets, gate_text(gate) if gate else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]


def routes_diff(ns: argparse.Namespace) -> int:
    from gateway.rollout.diff import diff

    tables = []
    for path in (ns.old, ns.new):
        try:
            tables.append(config.load(path))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
    if len(tables) < 2:
        return 1
    for line in diff(tables[0], tables[1]):
        print(line)
    return 0


def routes_step(ns: argparse.Namespace) -> int:
    from gateway.rollout.promotion import PromotionError

    try:
        outcome = asyncio.run(
            step_file(
                Path(ns.routes),
                ns.route,
                backwards=ns.backwards,
                to=getattr(ns, "to", None),
                dry_run=ns.dry_run,
            )
        )
    except (PromotionError, ConfigError) as exc:
        print(exc, file=sys.stderr)
        return 1
    for line in outcome.lines(ns.routes):
        print(line)
    if outcome.judgement is not None and not outcome.judgement.ok:
        return 1
    if ns.dry_run:
        print("dry run: the edit validates; nothing was written")
    return 0


async def step_file(
    path: Path, route: str, *, backwards: bool, to: str | None = None, dry_run: bool = False
) -> Promotion:
    """`promotion.step` with the evidence in the stores the routes file names: what
    `strangler routes promote | rollback` do (`strangler demo` calls it too)."""
    from gateway.rollout.evidence import EvidenceStore
    from gateway.rollout.promotion import step
    from gateway.shadow.store import create_store

    table = config.load(path)
    shadow = create_store(table.shadow_store.url)
    try:
        return await step(
            path,
            route,
            evidence=EvidenceStore(shadow.engine, "cli"),
            shadow=shadow,
            backwards=backwards,
            to=to,
            dry_run=dry_run,
        )
    finally:
        await shadow.close()
