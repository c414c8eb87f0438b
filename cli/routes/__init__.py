"""`strangler routes check | diff | promote | rollback`: the migration map, read and moved.

One module per subcommand: check.py, diff.py, step.py (promote and rollback).
"""

from __future__ import annotations

import argparse

from cli.routes.check import routes_check
from cli.routes.diff import routes_diff
from gateway.config.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    routes = sub.add_parser("routes", help="inspect the migration map")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    check = routes_sub.add_parser(
        "check", help="validate a routes file; print the resolved table or every error"
    )
    check.add_argument("file", nargs="?", default=settings.routes)
    check.set_defaults(handler=routes_check)
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
        command.add_argument("--routes", default=settings.routes, help="the routes file to edit")
        command.add_argument("--dry-run", action="store_true", help="judge and edit, not write")
        if name == "promote":
            command.add_argument("--to", help="from legacy: the upstream to shadow")
        command.set_defaults(handler=_routes_step, backwards=name == "rollback")


def _routes_step(ns: argparse.Namespace) -> int:
    # The evidence and shadow stores load SQLAlchemy: imported when a route moves, not with
    # every command.
    from cli.routes.step import routes_step

    return routes_step(ns)
