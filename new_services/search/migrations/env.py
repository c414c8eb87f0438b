"""Alembic environment of the search service: run only through `search.schema.migrate`.

`migrate` hands over a connection that already holds the migration lock, so this script
never opens connections of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from new_services.search.models import Base
from new_services.search.schema import VERSION_TABLE


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations with `strangler search migrate`")
    context.configure(
        connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
