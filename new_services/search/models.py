"""The search service's own, denormalised table: one row per product, category folded in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Searched and sorted text is byte-ordered and ASCII-case-folded on every dialect: collation "C"
# gives PostgreSQL what SQLite's BINARY collation and lower() do, as the monolith does.
SEARCH_NAME = String(200).with_variant(String(200, collation="C"), "postgresql")
SEARCH_TEXT = Text().with_variant(Text(collation="C"), "postgresql")
# A CDC source position (see cdc/envelope.py), compared as bytes on every dialect.
SOURCE_POSITION = String(33).with_variant(String(33, collation="C"), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SearchDocument(Base):
    __tablename__ = "search_documents"
    __table_args__ = (Index("ix_search_documents_name_product_id", "name", "product_id"),)

    # The monolith's product id, not a key of our own: results must carry the same ids.
    product_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(SEARCH_NAME)
    description: Mapped[str] = mapped_column(SEARCH_TEXT)
    price_cents: Mapped[int] = mapped_column(Integer)
    category_slug: Mapped[str] = mapped_column(String(64), index=True)
    category_name: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Written by the CDC bridge (issue 5); empty for rows from the one-off backfill.
    category_id: Mapped[int | None] = mapped_column(Integer, index=True)
    source_position: Mapped[str | None] = mapped_column(SOURCE_POSITION)


class SearchCategory(Base):
    """The CDC bridge's copy of the monolith's categories, joined into documents."""

    __tablename__ = "search_categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    source_position: Mapped[str | None] = mapped_column(SOURCE_POSITION)


class CdcPosition(Base):
    """The last source position the CDC bridge applied, per topic (for read-your-writes)."""

    __tablename__ = "cdc_positions"

    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    position: Mapped[str | None] = mapped_column(SOURCE_POSITION)
    source_ts_ms: Mapped[int | None] = mapped_column(BigInteger)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CdcTombstone(Base):
    """Where the CDC bridge deleted a row (or, key `*`, emptied a table): the source
    position, so an older event replayed later cannot bring the row back (issue 17)."""

    __tablename__ = "cdc_tombstones"
    __table_args__ = (Index("ix_cdc_tombstones_target_position", "target", "position"),)

    target: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[str] = mapped_column(SOURCE_POSITION)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
