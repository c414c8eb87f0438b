"""The monolith's JSON endpoints: parse the request, call the core in a thread, format.

Identity comes only from the gateway's headers (see `legacy_monolith.identity`): `X-User-Id`
is a username. Orders and `/users/{id}` need it (401 otherwise); product writes need the
`admin` role (403). Every error body is `{"error": "<stable_code>", "detail": "..."}`.

The /search contract, shared byte for byte with `new_services.search`:

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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from legacy_monolith import catalog, forms, orders
from legacy_monolith.commit_position import CommitPosition
from legacy_monolith.errors import ApiError
from legacy_monolith.identity import Identity
from legacy_monolith.models import Order, Product, User
from legacy_monolith.money import format_cents

T = TypeVar("T")
Json = dict[str, Any]


async def _in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in a worker thread, in one transaction: the engine is synchronous."""
    engine: Engine = request.app.state.engine

    def run() -> T:
        with Session(engine) as session, session.begin():
            return work(session)

    return await run_in_threadpool(run)


async def _write(request: Request, work: Callable[[Session], T]) -> tuple[T, dict[str, str]]:
    """`_in_transaction` for a write: also the commit position header of its answer, for
    the gateway's read-your-writes (legacy_monolith/commit_position.py)."""
    engine: Engine = request.app.state.engine

    def run() -> tuple[T, dict[str, str]]:
        with Session(engine) as session:
            position = CommitPosition(session)
            with session.begin():
                position.begin(session)
                result = work(session)
                position.before_commit(session)
            position.after_commit(session)
            return result, position.header()

    return await run_in_threadpool(run)


def _timestamp(value: datetime) -> str:
    # SQLite hands back naive datetimes (stored in UTC); PostgreSQL, the session's time zone.
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _product(product: Product) -> Json:
    return {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price": format_cents(product.price_cents),
        "category": product.category.slug,
        "stock": product.stock,
        "updated_at": _timestamp(product.updated_at),
    }


def _order(order: Order) -> Json:
    return {
        "id": order.id,
        "status": order.status,
        "created_at": _timestamp(order.created_at),
        "total": format_cents(order.total_cents),
        "items": [
            {
                "product_id": i.product_id,
                "quantity": i.quantity,
                "price": format_cents(i.price_cents),
            }
            for i in order.items
        ],
    }


def _listing(page: forms.Page, total: int, results: Sequence[Json]) -> Json:
    return {"page": page.page, "size": page.size, "total": total, "results": list(results)}


async def health(request: Request) -> Response:
    await _in_transaction(request, lambda session: session.execute(text("SELECT 1")))
    return JSONResponse({"status": "ok", "service": "legacy_monolith"})


async def search(request: Request) -> Response:
    query = forms.search_query(request.query_params)
    total, rows = await _in_transaction(request, lambda s: catalog.search(s, query))
    return JSONResponse(
        {
            "query": query.q,
            "category": query.category,
            "page": query.page.page,
            "size": query.page.size,
            "total": total,
            "results": [
                {
                    "id": product_id,
                    "name": name,
                    "description": description,
                    "price": format_cents(price_cents),
                    "category": slug,
                    "category_name": category_name,
                }
                for product_id, name, description, price_cents, slug, category_name in rows
            ],
        }
    )


async def list_products(request: Request) -> Response:
    page = forms.page(request.query_params)

    def work(session: Session) -> Json:
        total, products = catalog.list_products(session, page)
        return _listing(page, total, [_product(p) for p in products])

    return JSONResponse(await _in_transaction(request, work))


async def create_product(request: Request) -> Response:
    Identity.from_headers(request.headers).require_role("admin")
    form = forms.product(forms.json_object(await request.body()))
    body, headers = await _write(request, lambda s: _product(catalog.create_product(s, form)))
    return JSONResponse(body, 201, {"Location": f"/products/{body['id']}", **headers})


async def get_product(request: Request) -> Response:
    product_id = forms.object_id(request.path_params["id"])
    return JSONResponse(
        await _in_transaction(request, lambda s: _product(catalog.get_product(s, product_id)))
    )


async def update_product(request: Request) -> Response:
    Identity.from_headers(request.headers).require_role("admin")
    product_id = forms.object_id(request.path_params["id"])
    form = forms.product(forms.json_object(await request.body()))

    def work(session: Session) -> Json:
        return _product(
            catalog.update_product(session, catalog.get_product(session, product_id), form)
        )

    body, headers = await _write(request, work)
    return JSONResponse(body, headers=headers)


async def delete_product(request: Request) -> Response:
    Identity.from_headers(request.headers).require_role("admin")
    product_id = forms.object_id(request.path_params["id"])
    _, headers = await _write(request, lambda s: catalog.delete_product(s, product_id))
    return Response(status_code=204, headers=headers)


def _user(user: User) -> Json:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "roles": [role for role in user.roles.split(",") if role],
        "created_at": _timestamp(user.created_at),
    }


async def get_user(request: Request) -> Response:
    """A user's own record, or anyone's for an admin."""
    identity = Identity.from_headers(request.headers)
    username = identity.require_user()
    user_id = forms.object_id(request.path_params["id"])

    def work(session: Session) -> Json:
        # Authorise before looking the target up, so ids do not leak by 403 versus 404.
        caller = orders.user_by_username(session, username)
        if caller.id != user_id and "admin" not in identity.roles:
            raise ApiError(403, "forbidden", "only admins may read other users")
        user = session.get(User, user_id)
        if user is None:
            raise ApiError(404, "user_not_found", f"no user has id {user_id}")
        return _user(user)

    return JSONResponse(await _in_transaction(request, work))


async def list_orders(request: Request) -> Response:
    username = Identity.from_headers(request.headers).require_user()
    page = forms.page(request.query_params)

    def work(session: Session) -> Json:
        user = orders.user_by_username(session, username)
        total, mine = orders.list_orders(session, user, page)
        return _listing(page, total, [_order(o) for o in mine])

    return JSONResponse(await _in_transaction(request, work))


async def create_order(request: Request) -> Response:
    username = Identity.from_headers(request.headers).require_user()
    lines = forms.order(forms.json_object(await request.body()))

    def work(session: Session) -> Json:
        user = orders.user_by_username(session, username)
        return _order(orders.place_order(session, user, lines))

    body, headers = await _write(request, work)
    return JSONResponse(body, 201, headers)
