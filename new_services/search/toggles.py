"""Development toggles: deliberate behaviour changes switched at run time, for demos.

A toggle changes what the service answers while it runs, so `strangler demo` can show a
shadow comparison catching a difference and losing it again without a restart. The switch
endpoints exist only when the service is started with `strangler search serve
--dev-toggles`; otherwise every toggle stays off and nothing can turn it on.

    GET /_dev/toggles                 {"rounded_prices": false}
    PUT /_dev/toggles/rounded_prices  body "on" or "off" -> {"rounded_prices": true}

rounded_prices: prices are rounded half up to 10 cents ("12.47" -> "12.50"): the kind of
rounding change a rewrite introduces by accident, which the shadow report then shows at
`$.results[*].price`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from new_services.search.errors import ApiError

PREFIX = "/_dev/toggles"


@dataclass
class Toggles:
    rounded_prices: bool = False

    def price_cents(self, cents: int) -> int:
        if not self.rounded_prices:
            return cents
        return (cents + 5) // 10 * 10 if cents >= 0 else -((-cents + 5) // 10 * 10)


_NAMES = frozenset(f.name for f in fields(Toggles))
_VALUES = {"on": True, "off": False}


async def show(request: Request) -> Response:
    toggles: Toggles = request.app.state.toggles
    return JSONResponse(asdict(toggles))


async def switch(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _NAMES:
        raise ApiError(404, "unknown_toggle", f"no toggle {name!r} (known: {sorted(_NAMES)})")
    value = _VALUES.get((await request.body()).decode("utf-8", "replace").strip().lower())
    if value is None:
        raise ApiError(400, "invalid_toggle_value", 'the body must be "on" or "off"')
    toggles: Toggles = request.app.state.toggles
    setattr(toggles, name, value)
    return JSONResponse(asdict(toggles))


ROUTES = [
    Route(PREFIX, show, methods=["GET"]),
    Route(PREFIX + "/{name}", switch, methods=["PUT"]),
]
