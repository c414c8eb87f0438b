"""Environment settings of the CDC bridge, read once, with types (12-factor)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cdc.mapping import DEFAULT_PATH
from cdc.tombstones import DEFAULT_RETENTION
from common.validation import positive_duration


def parse_duration(text: str) -> timedelta:
    """A positive duration such as `7d`, `12h`, `90m` (raises ValueError)."""
    return timedelta(seconds=positive_duration(text))


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None  # None: the embedded, in-process mock cluster
    database_url: str  # the target: the search service's database
    source_database_url: str  # the monolith's SQLite database, for the dev capture
    mapping_path: Path
    group_id: str
    status_file: Path
    session_timeout_ms: int
    instance_id: str | None  # group.instance.id: static membership
    tombstone_retention: timedelta  # how long a delete guards against older replays

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            bootstrap_servers=environ.get("CDC_BOOTSTRAP_SERVERS") or None,
            database_url=environ.get("SEARCH_DATABASE_URL") or "sqlite:///var/search.db",
            source_database_url=environ.get("DATABASE_URL") or "sqlite:///var/legacy.db",
            mapping_path=Path(environ.get("CDC_MAPPING") or DEFAULT_PATH),
            group_id=environ.get("CDC_GROUP_ID") or "strangler-cdc",
            status_file=Path(environ.get("CDC_STATUS_FILE") or "var/cdc-status.json"),
            session_timeout_ms=int(environ.get("CDC_SESSION_TIMEOUT_MS") or 6_000),
            instance_id=environ.get("CDC_INSTANCE_ID") or None,
            tombstone_retention=(
                parse_duration(environ["CDC_TOMBSTONE_RETENTION"])
                if environ.get("CDC_TOMBSTONE_RETENTION")
                else DEFAULT_RETENTION
            ),
        )


@functools.cache
def settings() -> Settings:
    return Settings.from_env(os.environ)
