"""The server layer's own answers are JSON too, even when the application fails."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.edge import EdgeSettings
from gateway.http import server as edge
from tests.support.harness import get, serve
from tests.support.wire import check_gateway_error, exchange

pytestmark = pytest.mark.anyio


class Failing:
    """An application that fails in the ways uvicorn answers in plain text."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/raise":
            raise RuntimeError("the application failed")
        # /silent: returns without a response


@pytest.mark.parametrize("path", ["/raise", "/silent"])
async def test_a_failing_application_gets_a_json_500(path: str) -> None:
    app = Failing()
    config = edge.config(app, EdgeSettings, log_level="critical")
    async with serve(app, config=config) as url:
        answers = await exchange(int(url.rsplit(":", 1)[1]), get(path))
    assert len(answers) == 1
    check_gateway_error(answers[0], 500, "internal_error")
