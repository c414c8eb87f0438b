"""Querying the search documents: the same matches, in the same order, as the monolith."""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session

from new_services.search.models import SearchDocument

# SQLite's lower() folds only A-Z; folding the pattern the same way (and collation "C" on
# PostgreSQL, see models) makes "Über" match "über" nowhere rather than on one dialect only.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

SearchRow = Row[int, str, str, int, str, str]


@dataclass(frozen=True)
class SearchQuery:
    q: str
    category: str | None
    page: int
    size: int


def like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.translate(_ASCII_LOWER)}%"


def search(session: Session, query: SearchQuery) -> tuple[int, Sequence[SearchRow]]:
    """The total number of matches and the requested page of them, by name then id."""
    doc = SearchDocument
    conditions = []
    if query.q:
        pattern = like_pattern(query.q)
        conditions.append(
            or_(
                func.lower(doc.name).like(pattern, escape="\\"),
                func.lower(doc.description).like(pattern, escape="\\"),
            )
        )
    if query.category is not None:
        conditions.append(doc.category_slug == query.category)
    total = session.scalar(select(func.count()).select_from(doc).where(*conditions)) or 0
    rows = session.execute(
        select(
            doc.product_id,
            doc.name,
            doc.description,
            doc.price_cents,
            doc.category_slug,
            doc.category_name,
        )
        .where(*conditions)
        .order_by(doc.name, doc.product_id)
        .limit(query.size)
        .offset((query.page - 1) * query.size)
    ).all()
    return total, rows
