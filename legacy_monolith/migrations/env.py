"""Alembic environment of the monolith: run only through `legacy_monolith.schema.migrate`.

`migrate` hands over a connection that already holds the migration lock, so this script
never opens connections of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from legacy_monolith.models import Base
from legacy_monolith.schema import VERSION_TABLE


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations with `strangler monolith migrate`")
    context.configure(
        connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
