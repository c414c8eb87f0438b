"""The dashboard at `/_strangler/`: one static page that polls `/_strangler/dashboard.json`.

The page (gateway/observe/static/, plain HTML, CSS and JS, no build step) holds no data: a browser
cannot send a bearer token when it navigates, so the page, its script and its style are
asked of the policy with auth mode `optional`, and the bundled policy lets anyone load them.
The data, `dashboard.json`, is an admin endpoint like every other: the page asks for a
token, keeps it in the tab's sessionStorage (gone when the tab closes; never in a cookie,
so no other site can make the browser send it, and never in a URL, so no log holds it) and
sends it as `Authorization: Bearer` on its fetches.

The JSON is built when asked: the routes as `GET /_strangler/routes` describes them (so a
field added there, such as a route's state or weighted upstreams, reaches the page), the
requests per route and upstream counted since start (the page turns two polls into rates),
the shadow report (cached for a few seconds: it is a query of the results store), the
CDC bridge's status, and the sections features add (`Dashboard.add`, as they add metrics
sources: the upstreams' breakers and in-flight counts are `resilience`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.config.reload import RoutesWatcher
from gateway.config.routes import NO_ROUTE
from gateway.observe.admin import ADMIN_PREFIX
from gateway.observe.cdc import CdcSnapshot
from gateway.observe.traffic import Series, Traffic
from gateway.shadow.mirror import Mirror
from gateway.shadow.report import report_json

DATA_PATH = ADMIN_PREFIX + "dashboard.json"
# Next to this module, not `importlib.resources.files("gateway")`: when pytest puts `tests/`
# on sys.path, its `gateway` folder joins the package as a namespace portion and files()
# returns a MultiplexedPath that looks there first.
_STATIC = Path(__file__).with_name("static")
_ASSETS = {
    ADMIN_PREFIX: ("dashboard.html", b"text/html; charset=utf-8"),
    ADMIN_PREFIX + "dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    ADMIN_PREFIX + "dashboard.css": ("dashboard.css", b"text/css; charset=utf-8"),
}
ASSET_PATHS = frozenset(_ASSETS)  # open to the policy's decision without a token
PATHS = ASSET_PATHS | {DATA_PATH}
SHADOW_CACHE_SECONDS = 5.0
TOP_DIFFERENCES = 5

# The page runs only its own script and style and talks only to this origin; no framing.
ASSET_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        b" img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class Dashboard:
    def __init__(
        self,
        watcher: RoutesWatcher,
        traffic: Traffic,
        mirror: Mirror,
        cdc: Callable[[], Awaitable[CdcSnapshot]],
    ) -> None:
        self.watcher = watcher
        self.traffic = traffic
        self.mirror = mirror
        self.cdc = cdc
        self._assets: dict[str, tuple[bytes, bytes]] = {}
        self._shadow: tuple[float, list[dict[str, Any]]] | None = None
        self._sections: dict[str, Callable[[], Any]] = {}

    def add(self, name: str, section: Callable[[], Any]) -> None:
        """A feature's part of dashboard.json, `section()` built at every poll."""
        self._sections[name] = section

    def asset(self, path: str) -> tuple[bytes, bytes]:
        """(body, content type) of a page asset, read from the package on first use."""
        cached = self._assets.get(path)
        if cached is None:
            name, content_type = _ASSETS[path]
            body = (_STATIC / name).read_bytes()
            cached = self._assets[path] = (body, content_type)
        return cached

    async def document(self) -> dict[str, Any]:
        described = self.watcher.describe()
        table = self.watcher.table
        per_route: dict[str, list[tuple[str, Series]]] = {}
        per_upstream: dict[str, list[Series]] = {name: [] for name in table.upstreams}
        for (route_name, upstream), series in list(self.traffic.series.items()):
            per_route.setdefault(route_name, []).append((upstream, series))
            per_upstream.setdefault(upstream, []).append(series)
        routes = []
        for route, entry in zip(table.routes, described.pop("routes"), strict=True):
            shadow = route.shadow
            routes.append(
                {
                    **entry,
                    "shadow": {"upstream": shadow.upstream, "sample": shadow.sample}
                    if shadow
                    else None,
                    "traffic": _route_traffic(per_route.get(route.name, [])),
                }
            )
        upstreams = described.pop("upstreams")
        return {
            "now": time.time(),
            "routes_file": described,
            "routes": routes,
            "unrouted": _route_traffic(per_route.get(NO_ROUTE, [])),
            "upstreams": {
                name: {**upstreams.get(name, {}), **_counts(series)}
                for name, series in per_upstream.items()
            },
            "shadow": await self._shadow_report(),
            "cdc": (await self.cdc()).describe(),
            **{name: section() for name, section in self._sections.items()},
        }

    async def _shadow_report(self) -> list[dict[str, Any]]:
        if not any(route.shadow for route in self.watcher.table.routes):
            return []  # nothing is mirrored: no need to open (or create) the store
        now = time.monotonic()
        if self._shadow is None or now - self._shadow[0] > SHADOW_CACHE_SECONDS:
            summaries = await self.mirror.store.summary()
            routes = report_json(summaries)["routes"]
            for route in routes:
                route["top_differences"] = route["top_differences"][:TOP_DIFFERENCES]
                del route["top_noisy"]
            self._shadow = (now, routes)
        return self._shadow[1]


def _counts(series: list[Series]) -> dict[str, int]:
    return {
        "requests": sum(s.requests for s in series),
        "client_errors": sum(s.between(400, 500) for s in series),
        "errors": sum(s.between(500, 600) for s in series),
    }


def _route_traffic(series: list[tuple[str, Series]]) -> dict[str, Any]:
    return {
        **_counts([s for _, s in series]),
        "by_upstream": {upstream: s.requests for upstream, s in series},
    }
