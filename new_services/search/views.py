"""The search service's endpoints: `GET /search` and `GET /health`.

The /search contract, shared byte for byte with the monolith's (`legacy_monolith.views`):

    GET /search?q=&category=&page=&size=
      q         substring of name or description; ASCII letters match case-insensitively;
                `%`, `_` and `\\` match literally; absent or empty: everything; <= 200 chars
      category  a category slug, exact; absent or empty: every category; <= 64 chars
      page      1..1000000, default 1         size  1..100, default 20
    200 application/json, compact (separators "," and ":"), UTF-8 unescaped, keys in this order:
      {"query":"lamp","category":null,"page":1,"size":20,"total":2,"results":[{"id":7,
       "name":"Brass Desk Lamp","description":"...","price":"12.50","category":"lighting",
       "category_name":"Lighting"}]}
      ordered by name (by code point) then id; a page past the end has "results":[].
    400 {"error":"invalid_query"|"invalid_category"|"invalid_page"|"invalid_size","detail":...}
      checked in that order, the first failure wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from new_services.search import documents
from new_services.search.errors import ApiError
from new_services.search.toggles import Toggles

MAX_PAGE = 1_000_000
MAX_SIZE = 100
MAX_QUERY = 200
MAX_SLUG = 64
_DIGITS = re.compile(r"[0-9]{1,9}")  # int() also takes "+1", " 1", "1_0", Arabic-Indic digits


def _bounded_int(raw: str, low: int, high: int) -> int | None:
    if _DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def search_query(params: Mapping[str, str]) -> documents.SearchQuery:
    """Absent and empty parameters alike take their defaults (HTML forms send `page=`)."""
    q = params.get("q", "")
    if len(q) > MAX_QUERY or "\x00" in q:
        raise ApiError(400, "invalid_query", f"q must be at most {MAX_QUERY} characters, no NUL")
    category = params.get("category") or None
    if category is not None and (len(category) > MAX_SLUG or "\x00" in category):
        raise ApiError(400, "invalid_category", f"category must be a slug of <= {MAX_SLUG} chars")
    page = _bounded_int(params.get("page") or "1", 1, MAX_PAGE)
    if page is None:
        raise ApiError(400, "invalid_page", f"page must be an integer from 1 to {MAX_PAGE}")
    size = _bounded_int(params.get("size") or "20", 1, MAX_SIZE)
    if size is None:
        raise ApiError(400, "invalid_size", f"size must be an integer from 1 to {MAX_SIZE}")
    return documents.SearchQuery(q, category, page, size)


def format_cents(cents: int) -> str:
    units, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{units}.{rest:02d}"


async def health(request: Request) -> Response:
    engine: Engine = request.app.state.engine

    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    await run_in_threadpool(ping)
    return JSONResponse({"status": "ok", "service": "search"})


async def search(request: Request) -> Response:
    query = search_query(request.query_params)
    engine: Engine = request.app.state.engine

    def run() -> tuple[int, list[documents.SearchRow]]:
        with Session(engine) as session:
            total, rows = documents.search(session, query)
            return total, list(rows)

    total, rows = await run_in_threadpool(run)
    toggles: Toggles = request.app.state.toggles
    return JSONResponse(
        {
            "query": query.q,
            "category": query.category,
            "page": query.page,
            "size": query.size,
            "total": total,
            "results": [
                {
                    "id": product_id,
                    "name": name,
                    "description": description,
                    "price": format_cents(toggles.price_cents(price_cents)),
                    "category": slug,
                    "category_name": category_name,
                }
                for product_id, name, description, price_cents, slug, category_name in rows
            ],
        }
    )
