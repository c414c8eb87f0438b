"""The monolith as an ASGI app: `uvicorn --factory legacy_monolith.asgi:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from legacy_monolith.database import create_engine
from legacy_monolith.errors import EXCEPTION_HANDLERS
from legacy_monolith.settings import settings
from legacy_monolith.urls import urlpatterns


def create_app(database_url: str | None = None) -> Starlette:
    """The app; its engine is built at startup and disposed at shutdown, never at import."""
    url = database_url or settings().database_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = create_engine(url)
        try:
            yield
        finally:
            app.state.engine.dispose()

    return Starlette(routes=urlpatterns, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
