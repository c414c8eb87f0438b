"""Hot reload: valid files swap the whole table, invalid ones leave the last good one."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.app import GatewayApp
from gateway.config.table import RouteTable
from gateway.identity.embedded_policy import EmbeddedPolicy
from tests.support.harness import (
    Gateway,
    Recorder,
    admin_auth,
    get,
    raw_request,
    serve_gateway,
    serve_upstream,
    write_routes,
)

pytestmark = pytest.mark.anyio


def routes_text(search_target: str, legacy_url: str, search_url: str) -> str:
    return (
        f'upstreams:\n  legacy: {{url: "{legacy_url}"}}\n  search: {{url: "{search_url}"}}\n'
        "default: legacy\nroutes:\n"
        f"  - name: search\n    path: /search\n    upstream: {search_target}\n"
    )


async def test_good_file_swaps_and_bad_file_keeps_the_last_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_upstream() as legacy, serve_upstream() as search:
        routes = tmp_path / "routes.yaml"
        write_routes(routes, routes_text("legacy", legacy.url, search.url))
        async with serve_gateway(routes) as gw:
            before = gw.app.watcher.table.version
            first = await raw_request(gw.port, get("/search"))
            assert first.header("x-strangler-upstream") == "legacy"

            write_routes(routes, routes_text("search", legacy.url, search.url))
            assert gw.app.watcher.reload() is True
            moved = await raw_request(gw.port, get("/search"))
            assert moved.header("x-strangler-upstream") == "search"
            good = gw.app.watcher.table.version
            assert good != before

            write_routes(routes, "upstreams:\n  legacy: {url: nope}\nroutes: 7\n")
            with caplog.at_level(logging.ERROR, logger="strangler.reload"):
                assert gw.app.watcher.reload() is False
            assert "keeping version " + good in caplog.text
            still = await raw_request(gw.port, get("/search"))
            assert still.header("x-strangler-upstream") == "search"
            admin = (await raw_request(gw.port, get("/_strangler/routes", admin_auth()))).json()
            assert admin["version"] == good
            assert [h["version"] for h in admin["history"]] == [before, good]
            errors = admin["last_rejected"]["errors"]
            assert any("line 2" in e for e in errors) and any("line 3" in e for e in errors)
        assert len(search.seen) == 2 and len(legacy.seen) == 1


async def test_in_flight_request_finishes_on_the_table_it_started_with(
    tmp_path: Path,
) -> None:
    async with serve_upstream() as legacy, serve_upstream() as search:
        routes = tmp_path / "routes.yaml"
        write_routes(routes, routes_text("legacy", legacy.url, search.url))
        async with serve_gateway(routes) as gw:
            held = asyncio.create_task(raw_request(gw.port, get("/search/hold")))
            await legacy.entered.wait()  # the request is inside the old table's upstream
            write_routes(routes, routes_text("search", legacy.url, search.url))
            assert gw.app.watcher.reload()
            after = await raw_request(gw.port, get("/search/x"))
            legacy.release.set()
            old = await held
        assert old.header("x-strangler-upstream") == "legacy" and old.status == 200
        assert after.header("x-strangler-upstream") == "search"


async def test_no_request_sees_a_half_loaded_table(tmp_path: Path) -> None:
    """Reloads racing with requests: each answer is consistent with one whole version.

    The versions swap the upstreams' URLs and the route's target together, so in both
    the request reaches server A; a request that took its route from one version and the
    upstream URLs from the other would reach server B.
    """
    async with serve_upstream("A") as a, serve_upstream("B") as b:
        versions = [
            f'upstreams:\n  a: {{url: "{a.url}"}}\n  b: {{url: "{b.url}"}}\n'
            "routes:\n  - {name: search, path: /search, upstream: a}\n",
            f'upstreams:\n  a: {{url: "{b.url}"}}\n  b: {{url: "{a.url}"}}\n'
            "routes:\n  - {name: search, path: /search, upstream: b}\n",
        ]
        routes = tmp_path / "routes.yaml"
        write_routes(routes, versions[0])
        async with serve_gateway(routes) as gw:
            answered = asyncio.Event()
            names: list[str | None] = []

            async def client() -> None:
                for _ in range(30):
                    response = await raw_request(gw.port, get("/search"))
                    assert response.json()["served_by"] == "A"
                    names.append(response.header("x-strangler-upstream"))
                    answered.set()

            async def reloader() -> None:
                for i in range(20):
                    await answered.wait()
                    answered.clear()
                    write_routes(routes, versions[(i + 1) % 2])
                    assert gw.app.watcher.reload()

            await asyncio.gather(client(), client(), client(), reloader())
        assert set(names) == {"a", "b"}  # both versions served during the run
        assert b.seen == []


async def test_watch_loop_picks_up_an_edit(tmp_path: Path, upstream: Recorder) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, routes_text("legacy", upstream.url, upstream.url))
    app = GatewayApp(routes, reload_interval=0.01)
    swapped = asyncio.Event()
    swap = app.watcher.on_swap
    assert swap is not None

    def on_swap(table: RouteTable) -> None:
        swap(table)
        swapped.set()

    app.watcher.on_swap = on_swap
    await app.startup()
    try:
        write_routes(routes, routes_text("search", upstream.url, upstream.url))
        await asyncio.wait_for(swapped.wait(), timeout=10)
    finally:
        await app.shutdown()
    route = app.watcher.table.match("/search", "GET")
    assert route is not None and route.upstream == "search"


async def test_startup_with_a_bad_file_fails_loudly(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, "routes: []\n")
    with pytest.raises(Exception, match="missing 'upstreams'"):
        async with serve_gateway(routes):
            pass


async def test_removed_upstream_pool_is_closed(tmp_path: Path, gateway: Gateway) -> None:
    assert (await raw_request(gateway.port, get("/search"))).status == 200
    pools = gateway.app.pools
    search = gateway.app.watcher.table.upstreams["search"]
    pool = pools.get(search)
    routes = Path(gateway.app.watcher.path)
    routes.write_text(
        routes.read_text()
        .replace("  search: ", "  renamed: ")
        .replace("upstream: search", "upstream: renamed")
    )
    assert gateway.app.watcher.reload()
    assert pool.closing
    assert (await raw_request(gateway.port, get("/search"))).header(
        "x-strangler-upstream"
    ) == "renamed"


async def test_watch_loop_reloads_changed_policy_files(tmp_path: Path, upstream: Recorder) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "authz.rego").write_text("package strangler.authz\n\ndefault allow := false\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\ndefault: legacy\n'
        "auth: {default: none}\nauthz: {engine: embedded, policies: policies, cache: off}\n"
    )
    app = GatewayApp(routes, reload_interval=0.01)
    policy = app.guards.get(app.watcher.table).policy
    assert isinstance(policy, EmbeddedPolicy)
    swapped = asyncio.Event()
    policy.on_swap = lambda _version: swapped.set()
    await app.startup()
    try:
        (policies / "authz.rego").write_text("package strangler.authz\n\ndefault allow := true\n")
        await asyncio.wait_for(swapped.wait(), timeout=10)
    finally:
        await app.shutdown()
    assert (await policy.decide({})).allow is True
