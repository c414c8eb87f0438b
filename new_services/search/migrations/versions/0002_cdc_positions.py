"""What the CDC bridge needs: source positions, the categories it joins, applied positions.

- `search_documents.source_position` and `search_categories.source_position`: the source
  position each row reflects, so older events are skipped (issue 5). Nullable: rows from the
  one-off backfill have none, and any event replaces them.
- `search_documents.category_id`: the join key, so a changed category finds its documents.
- `search_categories`: the bridge's copy of the monolith's categories.
- `cdc_positions`: the last applied source position per topic, written in the same
  transaction as the rows, for read-your-writes in the gateway.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Positions are compared as strings: collation "C" keeps that a byte comparison on PostgreSQL.
POSITION = sa.String(33).with_variant(sa.String(33, collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column("search_documents", sa.Column("category_id", sa.Integer(), nullable=True))
    op.add_column("search_documents", sa.Column("source_position", POSITION, nullable=True))
    op.create_index(op.f("ix_search_documents_category_id"), "search_documents", ["category_id"])
    op.create_table(
        "search_categories",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("source_position", POSITION, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_categories")),
    )
    op.create_table(
        "cdc_positions",
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("position", POSITION, nullable=True),
        sa.Column("source_ts_ms", sa.BigInteger(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic", name=op.f("pk_cdc_positions")),
    )


def downgrade() -> None:
    op.drop_table("cdc_positions")
    op.drop_table("search_categories")
    op.drop_index(op.f("ix_search_documents_category_id"), table_name="search_documents")
    with op.batch_alter_table("search_documents") as batch:
        batch.drop_column("source_position")
        batch.drop_column("category_id")
