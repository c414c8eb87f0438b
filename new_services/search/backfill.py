"""A one-off copy of the monolith's catalogue into `search_documents`.

It reads the monolith's tables with plain SQL: the search service never imports the
monolith's code, and this query is the only place that knows the monolith's schema.
A later change replaces it with change data capture; until then, run it again to refresh.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import DateTime, Integer, String, Text, delete, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from new_services.search.database import create_engine
from new_services.search.models import SearchDocument

BATCH = 1000
SOURCE_QUERY = text(
    """
    SELECT p.id AS product_id, p.name AS name, p.description AS description,
           p.price_cents AS price_cents, c.slug AS category_slug, c.name AS category_name,
           p.updated_at AS updated_at
    FROM products p JOIN categories c ON c.id = p.category_id
    ORDER BY p.id
    """
).columns(
    # Typed, so SQLite's stored text comes back as datetimes the target column accepts.
    product_id=Integer,
    name=String,
    description=Text,
    price_cents=Integer,
    category_slug=String,
    category_name=String,
    updated_at=DateTime(timezone=True),
)


class BackfillError(Exception):
    """The copy could not be made; nothing was changed."""


def backfill(source_url: str, target_url: str) -> int:
    """Replace every search document with the monolith's products; return how many."""
    source_path = make_url(source_url)
    if (
        source_path.get_backend_name() == "sqlite"
        and not Path(source_path.database or "").is_file()
    ):
        # Connecting would silently create an empty database file.
        raise BackfillError(f"no monolith database at {source_path.database!r}")
    source, target = sa.create_engine(source_url), create_engine(target_url)
    copied = 0
    try:
        # One target transaction: searches see the old documents or the new, never half.
        with source.connect() as reading, target.begin() as writing:
            writing.execute(delete(SearchDocument))
            rows = reading.execution_options(yield_per=BATCH).execute(SOURCE_QUERY)
            for batch in rows.mappings().partitions():
                writing.execute(insert(SearchDocument), [dict(row) for row in batch])
                copied += len(batch)
    except DBAPIError as exc:
        raise BackfillError(f"backfill failed: {exc.orig}") from exc
    finally:
        source.dispose()
        target.dispose()
    return copied
