"""The dashboard in a real headless Chromium: it loads, asks for the admin token, shows the
routes from routes.yaml, and updates after traffic. Skipped (with the reason) where Chromium
or ChromeDriver is missing; failed instead under STRANGLER_REQUIRE_SERVICES=1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.observe.test_metrics import secured_routes, token, write_cdc_status
from tests.gateway.shadow.test_shadow import catalogue, service
from tests.support.fault_server import refused_url
from tests.support.harness import (
    Recorder,
    admin_token,
    get,
    raw_request,
    serve_gateway,
    write_routes,
)
from tests.support.webdriver import Browser, chromium

pytestmark = pytest.mark.anyio

CELL = "const row = document.querySelector(`#routes tr[data-route='${arguments[0]}']`);"


async def route_cell(browser: Browser, route: str, column: str) -> str | None:
    text = await browser.script(
        CELL + "return row ? row.querySelector(arguments[1]).textContent : null;",
        route,
        "." + column,
    )
    return None if text is None else str(text)


async def test_the_dashboard_asks_for_an_admin_token_then_shows_the_routes(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = secured_routes(tmp_path, upstream)
    async with serve_gateway(routes) as gw, chromium() as browser:
        await browser.open(gw.url + "/_strangler/")

        # No token yet: the page loads (it holds no data) and asks for one.
        await sign_in(browser, token("buyer"))
        refused = await browser.until(
            "the refusal of a buyer's token",
            lambda: browser.script(
                "const r = document.getElementById('login-reason').textContent;"
                "return r.includes('refused') ? r : null;"
            ),
        )
        assert "admin role" in refused

        await browser.type("#token", token("admin", sub="root"))
        await browser.click("#login button[type=submit]")
        names = await browser.until(
            "the routes of routes.yaml",
            lambda: browser.script(
                "return [...document.querySelectorAll('#routes tbody tr')]"
                ".map((tr) => tr.dataset.route);"
            ),
        )
        assert names == ["search", "products", "reports"]
        assert await browser.script("return document.getElementById('login').hidden;")
        version = await browser.script("return document.getElementById('version').textContent;")
        assert gw.app.watcher.table.version in version
        cdc = await browser.script("return document.getElementById('cdc-status').textContent;")
        assert "no cdc: section" in cdc
        assert await route_cell(browser, "search", "requests") == "0"


async def test_the_dashboard_updates_after_traffic(upstream: Recorder, tmp_path: Path) -> None:
    routes = secured_routes(tmp_path, upstream)
    async with serve_gateway(routes) as gw, chromium() as browser:
        await browser.open(gw.url + "/_strangler/")
        await sign_in(browser, token("admin", sub="root"))

        async def drawn() -> bool:
            return await route_cell(browser, "search", "requests") == "0"

        await browser.until("the search route at 0 requests", drawn)
        for _ in range(7):
            assert (await raw_request(gw.port, get("/search?q=lamp"))).status == 200
        for _ in range(2):  # a policy denial: a client error on the products route
            response = await raw_request(
                gw.port,
                b"DELETE /products/1 HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
            )
            assert response.status == 403

        async def counted() -> bool:
            return await route_cell(browser, "search", "requests") == "7"

        async def denied() -> bool:
            return await route_cell(browser, "products", "client-errors") == "100.0%"

        await browser.until("the search route's count to reach 7", counted)
        await browser.until("the products route's 4xx share", denied)
        legacy = await browser.script(
            "return document.querySelector(\"#upstreams tr[data-upstream='legacy'] .requests\")"
            ".textContent;"
        )
        assert legacy == "9"
        # The token never left the tab: no cookie was set for the gateway's origin.
        assert await browser.script("return document.cookie;") == ""


MARKUP = "<img src=x id=injected>"  # a candidate's value the page must show as text


@pytest.fixture
async def shadowed(tmp_path: Path) -> AsyncIterator[Browser]:
    """A browser signed in to the dashboard of a gateway whose shadowed route's candidate
    answers `MARKUP` (three comparisons, one copy dropped) and whose CDC bridge lags."""

    def candidate(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        return status, {**answer, "total": MARKUP}

    async with service(catalogue) as legacy, service(candidate) as search:
        routes = tmp_path / "routes.yaml"
        write_routes(
            routes,
            f"""
upstreams:
  legacy: {{url: "{legacy.url}", timeout: 2s}}
  search: {{url: "{search.url}", timeout: 2s}}
shadow_store: {{url: "sqlite:///{tmp_path}/shadow.db"}}
cdc: {{status_file: cdc-status.json}}
routes:
  - name: search
    path: /search
    upstream: legacy
    shadow: {{upstream: search, max_body: 1B}}
""",
        )
        write_cdc_status(tmp_path / "cdc-status.json", applied=40, lag=5)
        async with serve_gateway(routes) as gw, chromium() as browser:
            for _ in range(3):
                assert (await raw_request(gw.port, get("/search?q=lamp"))).status == 200
            with_body = get("/search?q=lamp", "Content-Length: 2") + b"{}"  # over max_body
            assert (await raw_request(gw.port, with_body)).status == 200
            await gw.app.mirror.drain()
            await browser.open(gw.url + "/_strangler/")
            await login(browser)  # the admin API needs a token even with auth: none
            yield browser


async def test_shadow_differences_are_drawn_as_text(shadowed: Browser) -> None:
    browser = shadowed

    async def shadow_heading() -> object:
        return await browser.script(
            "const h = document.querySelector(\"#shadow [data-route='search'] h3\");"
            "return h ? h.textContent : null;"
        )

    assert await browser.until("the shadow summary", shadow_heading) == "search: 0.0% identical"
    counts = await browser.script(
        "return document.querySelector(\"#shadow [data-route='search'] p\").textContent;"
    )
    assert counts.endswith("0 candidate errors, 1 dropped: body_too_large 1")
    example = await browser.script(
        "return document.querySelector('#shadow td.mono:last-child').textContent;"
    )
    assert example == f'2 → "{MARKUP}"'  # JSON values, as the differ records them
    assert await browser.script("return document.getElementById('injected');") is None


async def test_the_cdc_lag_is_drawn_as_text(shadowed: Browser) -> None:
    browser = shadowed

    async def lag() -> object:
        return await browser.script(
            "const row = document.querySelector(\"#cdc tr[data-table='public.products']\");"
            "return row ? row.children[2].textContent : null;"
        )

    assert await browser.until("the CDC table's lag", lag) == "5"
    assert "bridge running" in await browser.script(
        "return document.getElementById('cdc-status').textContent;"
    )
    assert await browser.script("return document.getElementById('login').hidden;")


async def sign_in(browser: Browser, bearer: str) -> None:
    """Wait for the token form and submit `bearer` with it."""
    await browser.until(
        "the token form",
        lambda: browser.script("return !document.getElementById('login').hidden;"),
    )
    await browser.type("#token", bearer)
    await browser.click("#login button[type=submit]")


async def login(browser: Browser) -> None:
    await sign_in(browser, admin_token())


async def upstream_cell(browser: Browser, upstream: str, css: str) -> str | None:
    text = await browser.script(
        "const cell = document.querySelector("
        "`#upstreams tr[data-upstream='${arguments[0]}'] ${arguments[1]}`);"
        "return cell ? cell.textContent : null;",
        upstream,
        css,
    )
    return None if text is None else str(text)


async def test_a_canarys_split_an_open_breaker_and_requests_in_flight(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f"""
upstreams:
  legacy: {{url: "{upstream.url}"}}
  search: {{url: "{upstream.url}"}}
  billing: {{url: "{refused_url()}", retries: off, breaker: {{minimum_calls: 2, cool_down: 1m}}}}
default: legacy
routes:
  - {{name: search, path: /search, upstream: {{legacy: 9, search: 1}}}}
  - {{name: billing, path: /billing, upstream: billing}}
""",
    )
    async with serve_gateway(routes) as gw, chromium() as browser:
        await browser.open(gw.url + "/_strangler/")
        await login(browser)  # the admin API needs a token even with auth: none

        async def canary() -> object:
            return await route_cell(browser, "search", "split .targets")

        assert await browser.until("the search route's split", canary) == "legacy 90% / search 10%"
        assert await route_cell(browser, "search", "state") == "canary"
        assert await route_cell(browser, "billing", "state") == "migrated"
        assert await upstream_cell(browser, "billing", ".breaker .state") == "closed"
        assert await upstream_cell(browser, "legacy", ".in-flight .count") == "0 / 100"

        for _ in range(2):  # refused: the breaker opens
            assert (await raw_request(gw.port, get("/billing"))).status == 502
        held = asyncio.create_task(raw_request(gw.port, get("/elsewhere/hold")))
        await upstream.entered.wait()

        async def opened() -> bool:
            return await upstream_cell(browser, "billing", ".breaker .state") == "open"

        async def in_flight() -> bool:
            return await upstream_cell(browser, "legacy", ".in-flight .count") == "1 / 100"

        await browser.until("the billing breaker to show open", opened)
        await browser.until("one request in flight to legacy", in_flight)
        hint = await upstream_cell(browser, "billing", ".breaker .hint")
        assert hint is not None and "opened 1" in hint and "retry in" in hint
        whole = await browser.script("return document.getElementById('gateway-load').textContent;")
        assert whole == "The whole gateway: 1 / 1000 in flight"
        upstream.release.set()
        assert (await held).status == 200

        async def drained() -> bool:
            return await upstream_cell(browser, "legacy", ".in-flight .count") == "0 / 100"

        await browser.until("legacy to have nothing in flight", drained)
