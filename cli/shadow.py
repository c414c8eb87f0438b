"""`strangler shadow report`: what the shadow traffic found, per route."""

from __future__ import annotations

import argparse
import asyncio
import time

from cli.table import load_table
from common.validation import parse_duration
from gateway.config.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    shadow = sub.add_parser("shadow", help="shadow traffic results")
    shadow_sub = shadow.add_subparsers(dest="shadow_command", required=True)
    report = shadow_sub.add_parser("report", help="per route: mirrored, identical, top diffs")
    report.add_argument("--route", help="only this route")
    report.add_argument("--since", type=parse_duration, help="only the last ... (e.g. 1h)")
    report.add_argument("--routes", default=settings.routes, help="where shadow_store is set")
    report.set_defaults(handler=shadow_report)


def shadow_report(ns: argparse.Namespace) -> int:
    # The store loads SQLAlchemy: imported when a report is asked for, not with every command.
    from gateway.shadow.report import format_report
    from gateway.shadow.store import create_store

    table = load_table(ns.routes)
    if table is None:
        return 1

    async def summaries() -> str:
        store = create_store(table.shadow_store.url)
        try:
            since = time.time() - ns.since if ns.since is not None else None
            return format_report(await store.summary(route=ns.route, since=since))
        finally:
            await store.close()

    print(asyncio.run(summaries()))
    return 0
