"""`strangler routes promote | rollback ROUTE`: move a route one state forward (if its
evidence meets its gate) or back, in the routes file the gateway reads.

Imported only when one of them runs (cli/routes/__init__.py): the evidence and shadow
stores load SQLAlchemy.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from common.validation import ConfigError
from gateway.config import table as config
from gateway.rollout.evidence import EvidenceStore
from gateway.rollout.promotion import Promotion, PromotionError, step
from gateway.shadow.store import create_store


def routes_step(ns: argparse.Namespace) -> int:
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
