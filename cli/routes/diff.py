"""`strangler routes diff OLD NEW`: what an edit of the routes file changes."""

from __future__ import annotations

import argparse
import sys

from common.validation import ConfigError
from gateway.config import table as config
from gateway.rollout.diff import diff


def routes_diff(ns: argparse.Namespace) -> int:
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
