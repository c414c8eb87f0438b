"""The dashboard over HTTP: who may load what, and what dashboard.json says after traffic.
The page itself, in a real browser, is in test_dashboard_browser.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.observe.test_metrics import bearer, secured_routes, token, write_cdc_status
from tests.gateway.shadow.test_shadow import catalogue, service
from tests.support.harness import (
    Gateway,
    Recorder,
    admin_auth,
    get,
    raw_request,
    serve_gateway,
    write_routes,
)

pytestmark = pytest.mark.anyio

ASSETS = {
    "/_strangler/": "text/html",
    "/_strangler/dashboard.js": "text/javascript",
    "/_strangler/dashboard.css": "text/css",
}


async def test_the_page_loads_without_a_token_its_data_needs_admin(
    upstream: Recorder, tmp_path: Path
) -> None:
    async with serve_gateway(secured_routes(tmp_path, upstream)) as gw:
        assets = {path: await raw_request(gw.port, get(path)) for path in ASSETS}
        anonymous = await raw_request(gw.port, get("/_strangler/dashboard.json"))
        buyer = await raw_request(
            gw.port, get("/_strangler/dashboard.json", bearer(token("buyer")))
        )
        admin = await raw_request(
            gw.port, get("/_strangler/dashboard.json", bearer(token("admin")))
        )
        bad_token = await raw_request(gw.port, get("/_strangler/", bearer("not-a-jwt")))
        posted = await raw_request(
            gw.port,
            b"POST /_strangler/ HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    for path, response in assets.items():
        assert response.status == 200, path
        assert (response.header("content-type") or "").startswith(ASSETS[path])
        csp = response.header("content-security-policy") or ""
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert response.header("x-content-type-options") == "nosniff"
    assert b'src="dashboard.js"' in assets["/_strangler/"].body
    assert anonymous.status == 401 and anonymous.json()["error"] == "unauthorized"
    assert buyer.status == 403 and buyer.json()["detail"] == "the admin API needs the admin role"
    assert admin.status == 200 and admin.header("cache-control") == "no-store"
    assert [r["name"] for r in admin.json()["routes"]] == ["search", "products", "reports"]
    assert bad_token.status == 401  # a token that is sent is checked, even for the page
    assert posted.status == 403  # the policy admits reads only
    assert upstream.seen == []


async def test_without_a_policy_the_files_auth_mode_still_guards_the_data(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = secured_routes(tmp_path, upstream, authz="none")
    async with serve_gateway(routes) as gw:
        page = await raw_request(gw.port, get("/_strangler/"))
        data = await raw_request(gw.port, get("/_strangler/dashboard.json"))
        buyer = await raw_request(gw.port, get("/_strangler/dashboard.json", bearer(token())))
        signed = await raw_request(
            gw.port, get("/_strangler/dashboard.json", bearer(token("admin")))
        )
    assert page.status == 200
    assert data.status == 401
    assert buyer.status == 403 and buyer.json()["error"] == "forbidden"  # no policy: the role
    assert signed.status == 200


async def test_the_admin_api_is_never_anonymous_even_with_auth_none(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\ndefault: legacy\n')
    paths = ["/_strangler/routes", "/_strangler/upstreams", "/_strangler/dashboard.json"]
    async with serve_gateway(routes) as gw:
        for path in paths:
            anonymous = await raw_request(gw.port, get(path))
            assert anonymous.status == 401 and anonymous.json()["error"] == "unauthorized"
            buyer = await raw_request(gw.port, get(path, admin_auth(roles=("buyer",))))
            assert buyer.status == 403
            admin = await raw_request(gw.port, get(path, admin_auth()))
            assert admin.status == 200, path
        health = await raw_request(gw.port, get("/_strangler/health"))
        assert health.status == 200  # load balancers probe it without a token
    assert upstream.seen == []


def find(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(i for i in items if all(i.get(k) == v for k, v in match.items()))


@dataclass(frozen=True, slots=True)
class Snapshots:
    """dashboard.json after traffic, shadow comparisons and a CDC status, then after a
    reload of routes.yaml (the shadow sample halved)."""

    legacy_url: str
    first: dict[str, Any]
    second: dict[str, Any]


@pytest.fixture
async def snapshots(tmp_path: Path) -> Snapshots:
    def drifting(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        return status, {**answer, "total": 9} if calls == 1 else answer

    async with service(catalogue) as legacy, service(drifting) as search:
        routes = tmp_path / "routes.yaml"
        text = f"""
upstreams:
  legacy: {{url: "{legacy.url}", timeout: 2s}}
  search: {{url: "{search.url}", timeout: 2s}}
  gone: {{url: "http://127.0.0.1:9", timeout: 1s, connect_timeout: 1s}}
default: legacy
shadow_store: {{url: "sqlite:///{tmp_path}/shadow.db"}}
cdc: {{status_file: cdc-status.json}}
routes:
  - name: search
    path: /search
    methods: [GET]
    upstream: legacy
    shadow: {{upstream: search, sample: 100%}}
  - {{name: orders, path: /orders, upstream: gone}}
"""
        write_routes(routes, text)
        write_cdc_status(tmp_path / "cdc-status.json", applied=12, lag=3)
        async with serve_gateway(routes) as gw:
            for _ in range(4):
                await raw_request(gw.port, get("/search?q=lamp"))
            await raw_request(gw.port, get("/orders"))
            await raw_request(gw.port, get("/elsewhere"))
            await gw.app.mirror.drain()
            first = await dashboard(gw)
            write_routes(routes, text.replace("sample: 100%", "sample: 50%"))
            assert gw.app.watcher.reload()
            second = await dashboard(gw)
    return Snapshots(legacy.url, first, second)


async def test_dashboard_json_counts_the_traffic_by_route_and_upstream(
    snapshots: Snapshots,
) -> None:
    first = snapshots.first
    search_route = find(first["routes"], name="search")
    assert search_route["upstream"] == "legacy" and search_route["path"] == "/search"
    assert search_route["shadow"] == {"upstream": "search", "sample": 1.0}
    assert search_route["traffic"] == {
        "requests": 4,
        "client_errors": 0,
        "errors": 0,
        "by_upstream": {"legacy": 4},
    }
    assert find(first["routes"], name="orders")["traffic"]["errors"] == 1  # 502
    assert first["unrouted"]["by_upstream"]["legacy"] == 1
    upstreams = first["upstreams"]
    legacy = upstreams["legacy"]
    assert legacy["requests"] == 5 and legacy["url"] == snapshots.legacy_url
    assert upstreams["gone"]["errors"] == 1 and upstreams["search"]["requests"] == 0


async def test_dashboard_json_has_the_shadow_report(snapshots: Snapshots) -> None:
    (shadow,) = snapshots.first["shadow"]
    assert (shadow["route"], shadow["compared"], shadow["different"]) == ("search", 4, 1)
    assert shadow["identical_pct"] == 75.0
    assert (shadow["dropped"], shadow["drops"]) == (0, {})  # the report's fields, by reason too
    assert shadow["top_differences"][0]["path"] == "$.total"


async def test_dashboard_json_has_the_resilience_state(snapshots: Snapshots) -> None:
    resilience = snapshots.first["resilience"]
    gone = resilience["upstreams"]["gone"]  # as GET /_strangler/upstreams says
    assert (gone["requests"], gone["attempts"], gone["failures"]) == (1, 2, 2)  # one retry
    assert (gone["in_flight"], gone["breaker"]["state"]) == (0, "closed")
    assert resilience["gateway"]["max_in_flight"] == 1000


async def test_dashboard_json_has_the_cdc_status(snapshots: Snapshots) -> None:
    cdc = snapshots.first["cdc"]
    assert cdc["up"] and cdc["detail"] is None and cdc["dead_lettered"] == 1
    assert find(cdc["tables"], table="public.products")["lag_events"] == 3
    assert find(cdc["tables"], table="public.products")["applied"] == 12


async def test_dashboard_json_follows_a_reload(snapshots: Snapshots) -> None:
    first, second = snapshots.first, snapshots.second
    assert first["routes_file"]["version"] != second["routes_file"]["version"]
    history = [h["version"] for h in second["routes_file"]["history"]]
    assert history == [first["routes_file"]["version"], second["routes_file"]["version"]]
    assert find(second["routes"], name="search")["shadow"]["sample"] == 0.5
    assert second["now"] >= first["now"]


async def dashboard(gw: Gateway) -> dict[str, Any]:
    response = await raw_request(gw.port, get("/_strangler/dashboard.json", admin_auth()))
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


async def test_without_cdc_or_shadow_the_dashboard_says_so(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\nroutes:\n'
        "  - {name: search, path: /search, upstream: legacy}\n",
    )
    async with serve_gateway(routes) as gw:
        body = await dashboard(gw)
    assert body["shadow"] == []
    assert not body["cdc"]["configured"] and "no cdc: section" in body["cdc"]["detail"]
