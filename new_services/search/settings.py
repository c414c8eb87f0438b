"""Environment settings of the search service, read once, with types (12-factor)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

# Relative to the working directory; the service owns this database, not the monolith's.
DEFAULT_DATABASE_URL = "sqlite:///var/search.db"


@dataclass(frozen=True)
class Settings:
    database_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(database_url=environ.get("SEARCH_DATABASE_URL") or DEFAULT_DATABASE_URL)


@functools.cache
def settings() -> Settings:
    return Settings.from_env(os.environ)
