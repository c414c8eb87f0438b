"""Parse and validate what clients send; every rejection is an ApiError with a stable code.

Query parameters treat "absent" and "empty" alike (HTML forms send `page=`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from legacy_monolith.errors import ApiError
from legacy_monolith.money import parse_price

MAX_PAGE = 1_000_000
MAX_SIZE = 100
MAX_QUERY = 200
MAX_SLUG = 64
MAX_ID = 2**31 - 1  # PostgreSQL `integer`: a larger id would be a database error, not a 404
MAX_STOCK = 1_000_000
MAX_QUANTITY = 100
MAX_ORDER_ITEMS = 50
_DIGITS = re.compile(r"[0-9]{1,9}")  # int() also takes "+1", " 1", "1_0", Arabic-Indic digits


@dataclass(frozen=True)
class Page:
    page: int
    size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


@dataclass(frozen=True)
class SearchQuery:
    q: str
    category: str | None
    page: Page


@dataclass(frozen=True)
class ProductForm:
    name: str
    description: str
    price_cents: int
    category: str
    stock: int


@dataclass(frozen=True)
class OrderLine:
    product_id: int
    quantity: int


def _bounded_int(raw: str, low: int, high: int) -> int | None:
    if _DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def page(params: Mapping[str, str]) -> Page:
    number = _bounded_int(params.get("page") or "1", 1, MAX_PAGE)
    if number is None:
        raise ApiError(400, "invalid_page", f"page must be an integer from 1 to {MAX_PAGE}")
    size = _bounded_int(params.get("size") or "20", 1, MAX_SIZE)
    if size is None:
        raise ApiError(400, "invalid_size", f"size must be an integer from 1 to {MAX_SIZE}")
    return Page(number, size)


def search_query(params: Mapping[str, str]) -> SearchQuery:
    q = params.get("q", "")
    if len(q) > MAX_QUERY or "\x00" in q:
        raise ApiError(400, "invalid_query", f"q must be at most {MAX_QUERY} characters, no NUL")
    category = params.get("category") or None
    if category is not None and (len(category) > MAX_SLUG or "\x00" in category):
        raise ApiError(400, "invalid_category", f"category must be a slug of <= {MAX_SLUG} chars")
    return SearchQuery(q, category, page(params))


def object_id(raw: str) -> int:
    number = _bounded_int(raw, 1, MAX_ID)
    if number is None:
        raise ApiError(400, "invalid_id", f"id must be an integer from 1 to {MAX_ID}")
    return number


def json_object(body: bytes) -> dict[str, Any]:
    try:
        # Deep nesting raises RecursionError, not ValueError.
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return document


def _text(document: Mapping[str, Any], field: str, max_length: int, default: str | None) -> str:
    value = document.get(field, default)
    if value is None:
        raise ApiError(422, "missing_field", f"{field} is required")
    # PostgreSQL rejects NUL in text, and a lone surrogate ("\ud800") cannot be UTF-8 encoded.
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        raise ApiError(422, "invalid_field", f"{field} must be a string of <= {max_length} chars")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_field", f"{field} must be valid unicode") from None
    return value


def _int(document: Mapping[str, Any], field: str, low: int, high: int, default: int | None) -> int:
    value = document.get(field, default)
    if value is None:
        raise ApiError(422, "missing_field", f"{field} is required")
    # bool is an int subclass: `true` is not a quantity.
    if type(value) is not int or not low <= value <= high:
        raise ApiError(422, "invalid_field", f"{field} must be an integer from {low} to {high}")
    return value


def product(document: Mapping[str, Any]) -> ProductForm:
    name = _text(document, "name", 200, None)
    if not name.strip():
        raise ApiError(422, "invalid_field", "name must not be blank")
    price = parse_price(_text(document, "price", 10, None))
    if price is None:
        raise ApiError(422, "invalid_field", 'price must be a decimal string such as "12.34"')
    return ProductForm(
        name=name,
        description=_text(document, "description", 2000, ""),
        price_cents=price,
        category=_text(document, "category", MAX_SLUG, None),
        stock=_int(document, "stock", 0, MAX_STOCK, 0),
    )


def order(document: Mapping[str, Any]) -> list[OrderLine]:
    items = document.get("items")
    if items is None:
        raise ApiError(422, "missing_field", "items is required")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ORDER_ITEMS:
        raise ApiError(422, "invalid_field", f"items must be a list of 1 to {MAX_ORDER_ITEMS}")
    lines = []
    for item in items:
        if not isinstance(item, dict):
            raise ApiError(422, "invalid_field", "each item must be an object")
        lines.append(
            OrderLine(
                _int(item, "product_id", 1, MAX_ID, None),
                _int(item, "quantity", 1, MAX_QUANTITY, None),
            )
        )
    if len({line.product_id for line in lines}) != len(lines):
        raise ApiError(422, "invalid_field", "each product_id may appear once")
    return lines
