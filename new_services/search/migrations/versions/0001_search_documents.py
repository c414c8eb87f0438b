"""The search service's denormalised documents.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Collation "C" on PostgreSQL: see new_services.search.models.
NAME = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")
TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("description", TEXT, nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("category_slug", sa.String(64), nullable=False),
        sa.Column("category_name", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_search_documents")),
    )
    op.create_index(
        op.f("ix_search_documents_category_slug"), "search_documents", ["category_slug"]
    )
    op.create_index(
        "ix_search_documents_name_product_id", "search_documents", ["name", "product_id"]
    )


def downgrade() -> None:
    op.drop_table("search_documents")
