"""The search service as an ASGI app: `uvicorn --factory new_services.search.asgi:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from new_services.search import toggles, views
from new_services.search.database import create_engine
from new_services.search.errors import EXCEPTION_HANDLERS
from new_services.search.settings import settings


def create_app(database_url: str | None = None, dev_toggles: bool = False) -> Starlette:
    """The app; its engine is built at startup and disposed at shutdown, never at import.

    `dev_toggles` mounts the endpoints that switch deliberate differences on (demos only).
    """
    url = database_url or settings().database_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = create_engine(url)
        try:
            yield
        finally:
            app.state.engine.dispose()

    routes = [
        Route("/health", views.health, methods=["GET"]),
        Route("/search", views.search, methods=["GET"]),
    ]
    if dev_toggles:
        routes += toggles.ROUTES
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.toggles = toggles.Toggles()
    return app
