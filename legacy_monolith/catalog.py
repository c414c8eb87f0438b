"""Products and categories: search, listing and the admin's writes."""

from __future__ import annotations

import string
from collections.abc import Sequence

from sqlalchemy import Row, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from legacy_monolith.errors import ApiError
from legacy_monolith.forms import Page, ProductForm, SearchQuery
from legacy_monolith.models import Category, Product, utcnow

# SQLite's lower() folds only A-Z; folding the pattern the same way (and collation "C" on
# PostgreSQL, see models) makes "Über" match "über" nowhere rather than on one dialect only.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

SearchRow = Row[int, str, str, int, str, str]


def like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.translate(_ASCII_LOWER)}%"


def search(session: Session, query: SearchQuery) -> tuple[int, Sequence[SearchRow]]:
    """The total number of matches and the requested page of them, by name then id."""
    conditions = []
    if query.q:
        pattern = like_pattern(query.q)
        conditions.append(
            or_(
                func.lower(Product.name).like(pattern, escape="\\"),
                func.lower(Product.description).like(pattern, escape="\\"),
            )
        )
    if query.category is not None:
        conditions.append(Category.slug == query.category)
    total = (
        session.scalar(select(func.count()).select_from(Product).join(Category).where(*conditions))
        or 0
    )
    rows = session.execute(
        select(
            Product.id,
            Product.name,
            Product.description,
            Product.price_cents,
            Category.slug,
            Category.name,
        )
        .join(Category)
        .where(*conditions)
        .order_by(Product.name, Product.id)
        .limit(query.page.size)
        .offset(query.page.offset)
    ).all()
    return total, rows


def list_products(session: Session, page: Page) -> tuple[int, Sequence[Product]]:
    total = session.scalar(select(func.count()).select_from(Product)) or 0
    products = session.scalars(
        select(Product).order_by(Product.id).limit(page.size).offset(page.offset)
    ).all()
    return total, products


def get_product(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise ApiError(404, "product_not_found", f"no product has id {product_id}")
    return product


def _category(session: Session, slug: str) -> Category:
    category = session.scalar(select(Category).where(Category.slug == slug))
    if category is None:
        raise ApiError(422, "unknown_category", f"no category has slug {slug!r}")
    return category


def create_product(session: Session, form: ProductForm) -> Product:
    return update_product(session, Product(), form)


def update_product(session: Session, product: Product, form: ProductForm) -> Product:
    product.name = form.name
    product.description = form.description
    product.price_cents = form.price_cents
    product.category = _category(session, form.category)
    product.stock = form.stock
    product.updated_at = utcnow()
    session.add(product)
    session.flush()
    return product


def delete_product(session: Session, product_id: int) -> None:
    session.delete(get_product(session, product_id))
    try:
        session.flush()
    except IntegrityError:
        raise ApiError(409, "product_in_use", "the product appears in orders") from None
