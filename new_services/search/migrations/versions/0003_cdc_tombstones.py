"""The CDC bridge's tombstones: the source position at which each deleted row went.

A delete leaves its key and position here, and a truncate its table with the key `*`, so
an older create or update replayed later is skipped instead of bringing the row back
(issue 17). Kept for the bridge's tombstone retention (see the README's CDC section).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Positions are compared as strings: collation "C" keeps that a byte comparison on PostgreSQL.
POSITION = sa.String(33).with_variant(sa.String(33, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cdc_tombstones",
        sa.Column("target", sa.String(63), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("position", POSITION, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "key", name=op.f("pk_cdc_tombstones")),
    )
    op.create_index(op.f("ix_cdc_tombstones_deleted_at"), "cdc_tombstones", ["deleted_at"])
    # The newest tombstone of a target in one index probe: upserts newer than it need no
    # lookup of their keys (the streaming case).
    op.create_index("ix_cdc_tombstones_target_position", "cdc_tombstones", ["target", "position"])


def downgrade() -> None:
    op.drop_index("ix_cdc_tombstones_target_position", table_name="cdc_tombstones")
    op.drop_index(op.f("ix_cdc_tombstones_deleted_at"), table_name="cdc_tombstones")
    op.drop_table("cdc_tombstones")
