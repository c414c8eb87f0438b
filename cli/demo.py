"""`strangler demo`: the walk-through of moving /search off the monolith (demo/)."""

from __future__ import annotations

import argparse

from gateway.config.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    demo = sub.add_parser("demo", help="walk through moving /search from the monolith")
    demo.add_argument("--check", action="store_true", help="verify every step and exit")
    demo.add_argument("--workdir", help="where the databases and routes.yaml go (default: temp)")
    demo.add_argument("--gateway-port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--legacy-port", type=int, default=0)
    demo.add_argument("--search-port", type=int, default=0)
    # --- `strangler demo --against URL`: drive a running stack (demo/stack.py) ---
    demo.add_argument("--against", metavar="URL", help="a running stack's gateway, e.g. compose's")
    demo.add_argument(
        "--routes", help="the routes file that gateway reads (default: deploy/routes.compose.yaml)"
    )
    demo.add_argument("--compose", help="where secret_env values come from (default: nearest)")
    demo.add_argument("--search-url", help="the search service itself, for its --dev-toggles")
    demo.add_argument("--no-cdc", action="store_true", help="the stack has no CDC bridge")
    demo.set_defaults(handler=run_demo)


def run_demo(ns: argparse.Namespace) -> int:
    # The demo imports every package of the project: loaded when it runs.
    from demo.walkthrough import main

    return main(ns)
