"""Environment settings of the CDC bridge, read once, with types (12-factor)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cdc.mapping import DEFAULT_PATH


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(
            bootstrap_servers=environ.get("CDC_BOOTSTRAP_SERVERS") or None,
            database_url=environ.get("SEARCH_DATABASE_URL") or "sqlite:///var/search.db",
            source_database_url=environ.get("DATABASE_URL") or "sqlite:///var/legacy.db",
            mapping_path=Path(environ.get("CDC_MAPPING") or DEFAULT_PATH),
            group_id=environ.get("CDC_GROUP_ID") or "strangler-cdc",
            status_file=Path(environ.get("CDC_STATUS_FILE") or "var/cdc-status.json"),
            session_timeout_ms=int(environ.get("CDC_SESSION_TIMEOUT_MS") or 10_000),
            instance_id=environ.get("CDC_INSTANCE_ID") or None,
        )


@functools.cache
def settings() -> Settings:
    return Settings.from_env(os.environ)
