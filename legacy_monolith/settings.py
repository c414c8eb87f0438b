"""Environment settings of the legacy monolith, read once, with types (12-factor)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

# Relative to the working directory, like Django's default sqlite path.
DEFAULT_DATABASE_URL = "sqlite:///var/legacy.db"


@dataclass(frozen=True)
class Settings:
    database_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(database_url=environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


@functools.cache
def settings() -> Settings:
    return Settings.from_env(os.environ)
