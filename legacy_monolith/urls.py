"""The URL conf, Django-style: one list of routes, each naming its views by method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from legacy_monolith import views

View = Callable[[Request], Awaitable[Response]]


def path(route: str, **by_method: View) -> Route:
    """One Route per path, so a 405's Allow header names every method the path takes."""

    async def dispatch(request: Request) -> Response:
        # Starlette answers HEAD wherever GET is allowed.
        method = "get" if request.method == "HEAD" else request.method.lower()
        return await by_method[method](request)

    return Route(route, dispatch, methods=[method.upper() for method in by_method])


urlpatterns = [
    path("/health", get=views.health),
    path("/search", get=views.search),
    path("/products", get=views.list_products, post=views.create_product),
    path(
        "/products/{id}",
        get=views.get_product,
        put=views.update_product,
        delete=views.delete_product,
    ),
    path("/users/{id}", get=views.get_user),
    path("/orders", get=views.list_orders, post=views.create_order),
]
