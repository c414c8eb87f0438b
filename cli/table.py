"""The routes file a command reads, loaded for it."""

from __future__ import annotations

import sys

from common.validation import ConfigError
from gateway.config import table as config


def load_table(path: str) -> config.RouteTable | None:
    """The routes file's table, or None after printing every error."""
    try:
        return config.load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
