"""Bring the search database to the newest migration, safely from many replicas at once.

The history lives in `new_services/search/migrations` (Alembic) and is recorded in its own
version table, so the search service and the monolith can share one PostgreSQL database.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from new_services.search.database import create_engine

VERSION_TABLE = "search_alembic_version"
# pg_advisory_xact_lock key, fixed per service: replicas starting together queue on it, one
# migrates, the rest find the version table at head. Released when the transaction ends.
ADVISORY_LOCK_KEY = 0x5EA4C8_0002
SCRIPT_LOCATION = Path(__file__).parent / "migrations"

# Alembic's `context` and `op` are module-level proxies: two migrations in one process at once
# would overwrite each other's, whatever the database lock says.
_in_process = threading.Lock()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "the migration history is empty"
    return revision


def migrate(database_url: str) -> str:
    """Upgrade to head (a no-op when already there) and return the head revision."""
    engine = create_engine(database_url)
    try:
        with _in_process, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    return head()
