"""The features' stats on GET /metrics (gateway/observe/feature_metrics.py): resilience, rate limits
and idempotency keys, the shared store, the canary. Each test sends real traffic through a
real gateway, scrapes it and parses the exposition with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.rollout import sticky
from tests.gateway.limits.test_idempotency import Orders, post
from tests.gateway.observe.test_metrics import Samples, bearer, scrape, value
from tests.gateway.resilience.test_faults import FakeClock, send
from tests.gateway.rollout import test_canary
from tests.support.fault_server import FaultServer, refused_url, serve_faults
from tests.support.harness import (
    Gateway,
    admin_auth,
    get,
    raw_request,
    serve,
    serve_gateway,
    serve_upstream,
    write_routes,
)
from tests.support.shared_store import OwnRedis
from tests.support.shared_store import bearer as store_bearer
from tests.support.shared_store import write_routes as write_store_routes

pytestmark = pytest.mark.anyio


def series(scraped: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of `name`, by its sorted labels."""
    return {labels: v for (n, labels), v in scraped.items() if n == name}


def per_upstream(scraped: Samples, upstream: str, *names: str) -> list[float | None]:
    """The values of `strangler_<name>{upstream=...}` for each name."""
    return [value(scraped, "strangler_" + name, upstream=upstream) for name in names]


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    async with serve_faults() as server:
        yield server


def fault_routes(tmp_path: Path, faults: FaultServer, flaky: str, top: str = "") -> Path:
    path = tmp_path / "routes.yaml"
    write_routes(
        path,
        f"""
{top}
upstreams:
  flaky:
    url: "{faults.url}"
    {flaky}
  slow: {{url: "{faults.url}", first_byte_timeout: 100ms, retries: off, breaker: off}}
  refused: {{url: "{refused_url()}", retries: off, breaker: {{minimum_calls: 2}}}}
default: flaky
metrics: {{access: open}}
routes:
  - {{name: all, path: /, upstream: flaky}}
  - {{name: reports, path: /reports, upstream: flaky, priority: background}}
  - {{name: checkout, path: /checkout, upstream: flaky, priority: critical}}
  - {{name: slow, path: /slow, upstream: slow}}
  - {{name: refused, path: /refused, upstream: refused}}
""",
    )
    return path


# --- resilience -------------------------------------------------------------------------


async def test_the_breaker_state_opened_and_rejected_as_on_the_admin_api(
    tmp_path: Path, faults: FaultServer
) -> None:
    breaker = "breaker: {minimum_calls: 4, failure_rate: 50%, cool_down: 30s, probes: 2}"
    async with serve_gateway(fault_routes(tmp_path, faults, f"retries: off\n    {breaker}")) as gw:
        clock = gw.app.resilience.clock = FakeClock()
        closed = await scrape(gw)
        faults.failures = 3
        assert [(await send(gw, "GET", "/flaky")).status for _ in range(4)] == [503] * 3 + [200]
        for _ in range(2):
            assert (await send(gw, "GET", "/flaky")).json()["error"] == "circuit_open"
        opened = await scrape(gw)
        admin = await raw_request(gw.port, get("/_strangler/upstreams", admin_auth()))
        clock.now += 31
        half_open = await scrape(gw)
        for _ in range(2):  # the probes succeed
            assert (await send(gw, "GET", "/flaky")).status == 200
        closed_again = await scrape(gw)

    def states(scraped: Samples) -> dict[str, float]:
        return {
            dict(labels)["state"]: v
            for labels, v in series(scraped, "strangler_breaker_state").items()
            if ("upstream", "flaky") in labels
        }

    assert states(closed) == {"closed": 1, "open": 0, "half_open": 0}
    assert states(opened) == {"closed": 0, "open": 1, "half_open": 0}
    assert admin.json()["upstreams"]["flaky"]["breaker"]["state"] == "open"  # they agree
    assert states(half_open) == {"closed": 0, "open": 0, "half_open": 1}
    assert states(closed_again) == {"closed": 1, "open": 0, "half_open": 0}
    assert per_upstream(
        opened,
        "flaky",
        "breaker_opened_total",
        "breaker_rejected_total",
        "breaker_failure_ratio",
        "upstream_requests_total",
        "upstream_attempts_total",
        "upstream_failures_total",
    ) == [1, 2, 0.75, 4, 4, 3]
    assert per_upstream(closed_again, "flaky", "upstream_requests_total") == [6]
    # breaker: off has no breaker series; the other upstreams' are closed
    assert value(opened, "strangler_breaker_state", upstream="slow", state="closed") is None
    assert value(opened, "strangler_breaker_state", upstream="refused", state="closed") == 1


async def test_retries_made_and_refused_by_the_budget_and_timeouts(
    tmp_path: Path, faults: FaultServer
) -> None:
    budget = "retries: {attempts: 5, backoff: 1ms, budget: 50%, min_per_second: 0}"
    async with serve_gateway(fault_routes(tmp_path, faults, f"{budget}\n    breaker: off")) as gw:
        gw.app.resilience.clock = FakeClock()  # one budget window for the whole test
        faults.failures = 1000
        for _ in range(10):
            assert (await send(gw, "GET", "/flaky")).status == 503
        assert (await send(gw, "GET", "/slow/stall-head")).status == 504
        scraped = await scrape(gw)
    counters = [f"upstream_{name}_total" for name in ("retries", "retries_denied", "attempts")]
    counters += ["upstream_failures_total", "upstream_timeouts_total"]
    # as test_faults counts them: requests 2, 4, ... 10 get one retry each, then are refused
    assert per_upstream(scraped, "flaky", *counters) == [5, 10, 15, 15, 0]
    assert per_upstream(scraped, "slow", *counters) == [0, 0, 1, 1, 1]
    assert faults.hits["flaky"] == 15


async def test_in_flight_with_its_limits_and_shed_by_priority(
    tmp_path: Path, faults: FaultServer
) -> None:
    # upstream limit 4: critical may fill 4, normal 3, background 2
    shedding = "load_shedding: {max_in_flight: 100, reserve: {critical: 25%, normal: 25%}}"
    async with serve_gateway(fault_routes(tmp_path, faults, "max_in_flight: 4", shedding)) as gw:
        held = [asyncio.create_task(send(gw, "GET", "/reports/hold")) for _ in range(2)]
        await faults.wait_held(2)
        assert (await send(gw, "GET", "/reports/ok")).status == 503
        held.append(asyncio.create_task(send(gw, "GET", "/hold")))
        await faults.wait_held(3)
        assert (await send(gw, "GET", "/ok")).status == 503
        busy = await scrape(gw)
        faults.release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200] * 3
        idle = await scrape(gw)

    assert value(busy, "strangler_upstream_in_flight", upstream="flaky") == 3
    assert value(busy, "strangler_upstream_in_flight_limit", upstream="flaky") == 4
    assert value(busy, "strangler_gateway_in_flight") == 3
    assert value(busy, "strangler_gateway_in_flight_limit") == 100
    shed = {
        dict(labels)["priority"]: v
        for labels, v in series(busy, "strangler_upstream_shed_total").items()
        if ("upstream", "flaky") in labels
    }
    assert shed == {"critical": 0, "normal": 1, "background": 1}
    assert series(busy, "strangler_gateway_shed_total") == {
        (("priority", p),): 0 for p in ("critical", "normal", "background")
    }
    assert value(idle, "strangler_upstream_in_flight", upstream="flaky") == 0
    assert value(idle, "strangler_gateway_in_flight") == 0


# --- rate limits, idempotency keys, the shared store -------------------------------------


def limited_routes(tmp_path: Path, upstream: str, store: str = "") -> Path:
    return write_store_routes(
        tmp_path / "routes.yaml",
        upstream,
        f"{store}metrics: {{access: open}}\nroutes:\n"
        "  - {name: search, path: /search, upstream: legacy, rate_limit: {limit: 2, window: 1h}}\n"
        "  - {name: strict, path: /strict, upstream: legacy,"
        " rate_limit: {limit: 100, window: 1h, failure: closed}}\n"
        "  - {name: orders, path: /orders, upstream: legacy,"
        " idempotency: {max_response: 1KiB}}\n"
        "  - {name: plain, path: /plain, upstream: legacy}\n",
    )


def keyed(path: str, key: str, body: bytes = b"{}") -> bytes:
    return post(path, body, f"Idempotency-Key: {key}")


async def test_rate_limit_decisions_and_idempotency_outcomes_per_route(tmp_path: Path) -> None:
    orders = Orders()
    async with serve(orders) as url:
        async with serve_gateway(limited_routes(tmp_path, url)) as gw:
            before = await scrape(gw)
            statuses = [(await raw_request(gw.port, get("/search"))).status for _ in range(3)]
            assert statuses == [201, 201, 429]

            async def status(head: bytes) -> int:
                return (await raw_request(gw.port, head)).status

            assert await status(keyed("/orders", "a")) == 201  # claimed, kept
            assert await status(keyed("/orders", "a")) == 201  # replayed
            assert await status(keyed("/orders", "a", b'{"x": 1}')) == 422  # mismatch
            assert await status(keyed("/orders?status=503", "b")) == 503  # released
            assert await status(keyed("/orders?size=4096", "c")) == 201  # kept head only
            assert await status(keyed("/orders?size=4096", "c")) == 409  # not kept
            first = asyncio.create_task(status(keyed("/orders/hold", "d")))
            await orders.entered.wait()
            assert await status(keyed("/orders/hold", "d")) == 409  # conflict
            orders.release.set()
            assert await first == 201
            scraped = await scrape(gw)

    decisions = "strangler_rate_limit_decisions_total"
    assert series(before, decisions) == {  # configured routes, from the first scrape
        (("decision", d), ("route", r)): 0
        for d in ("allowed", "limited")
        for r in ("search", "strict")
    }
    assert value(scraped, decisions, route="search", decision="allowed") == 2
    assert value(scraped, decisions, route="search", decision="limited") == 1
    assert not [labels for labels in series(scraped, decisions) if ("route", "plain") in labels]
    requests = {
        dict(labels)["outcome"]: v
        for labels, v in series(scraped, "strangler_idempotency_requests_total").items()
    }
    assert requests == {"claimed": 4, "replayed": 1, "mismatch": 1, "not_kept": 1, "conflict": 1}
    claims = {
        dict(labels)["outcome"]: v
        for labels, v in series(scraped, "strangler_idempotency_claims_total").items()
    }
    assert claims == {"kept": 2, "kept_head_only": 1, "released": 1}
    assert value(scraped, "strangler_store_up", backend="memory") == 1
    assert set(series(scraped, "strangler_store_failures_total").values()) == {0}
    assert orders.runs == 2 + 4  # the allowed searches and the claimed orders ran


async def test_store_failures_by_feature_and_policy_and_the_store_down(
    tmp_path: Path, own_redis: OwnRedis
) -> None:
    store = f'store: {{backend: redis, url: "{own_redis.url}", timeout: 200ms, cooldown: 1m}}\n'
    async with serve_upstream() as upstream:
        async with serve_gateway(limited_routes(tmp_path, upstream.url, store)) as gw:
            assert (await raw_request(gw.port, get("/search"))).status == 200
            up = await scrape(gw)
            own_redis.kill()
            for _ in range(2):  # rate limit, open by default: passes uncounted
                assert (await raw_request(gw.port, get("/search"))).status == 200
            assert (await raw_request(gw.port, get("/strict"))).status == 503
            assert (await raw_request(gw.port, keyed("/orders", "k"))).status == 503
            signed_in = store_bearer("alice")  # its jti is looked up in the denylist
            assert (await raw_request(gw.port, get("/plain", signed_in))).status == 503
            down = await scrape(gw)

    assert value(up, "strangler_store_up", backend="redis") == 1
    assert value(down, "strangler_store_up", backend="redis") == 0
    failures = {
        (dict(labels)["feature"], dict(labels)["mode"]): v
        for labels, v in series(down, "strangler_store_failures_total").items()
    }
    assert failures == {
        ("rate_limit", "open"): 2,
        ("rate_limit", "closed"): 1,
        ("idempotency", "open"): 0,
        ("idempotency", "closed"): 1,
        ("revocation", "open"): 0,
        ("revocation", "closed"): 1,
    }
    allowed = value(
        down, "strangler_rate_limit_decisions_total", route="search", decision="allowed"
    )
    assert allowed == 1  # the requests that passed uncounted are failures, not decisions


# --- the canary -------------------------------------------------------------------------


@pytest.fixture
async def canary(tmp_path: Path) -> AsyncIterator[test_canary.Stack]:
    shutil.copytree(test_canary.POLICIES, tmp_path / "policies")
    async with serve_upstream("legacy") as legacy, serve_upstream("search") as search:
        routes = tmp_path / "routes.yaml"
        test_canary.write(routes, legacy, search, (70, 30), test_canary.POLICY)
        async with serve_gateway(routes) as gw:
            yield test_canary.Stack(gw, legacy, search, routes)


async def admin_scrape(gw: Gateway) -> Samples:
    return await scrape(gw, bearer(test_canary.token("ops", "admin")))


async def test_split_picks_overrides_and_cookies_per_route(canary: test_canary.Stack) -> None:
    gw = canary.gateway
    start = await admin_scrape(gw)
    callers = [f"user-{i}" for i in range(50)]
    for user in callers:
        await canary.as_user(user, "buyer")
    header = "X-Strangler-Target: search"
    assert await canary.as_user("tess", "migration-tester", extra=(header,)) == "search"
    await canary.as_user("bob", "buyer", extra=(header,))  # not a tester: ignored
    _, answer = await canary.ask("X-Forwarded-For: 192.0.2.7")  # anonymous: a cookie is set
    assert "set-cookie" in answer
    scraped = await admin_scrape(gw)

    picks = "strangler_split_assignments_total"
    assert series(start, picks) == {  # the split's upstreams, from the first scrape
        (("route", "search"), ("upstream", "legacy")): 0,
        (("route", "search"), ("upstream", "search")): 0,
    }
    secret = gw.app.watcher.table.rollout.sticky.secret
    keys = [f"sub:{user}".encode() for user in [*callers, "tess", "bob"]]
    keys.append(b"c:" + sticky.value_for(secret, "192.0.2.7"))
    expected = Counter(test_canary.predicted(canary, key) for key in keys)
    assert {dict(k)["upstream"]: v for k, v in series(scraped, picks).items()} == expected
    assert expected["legacy"] and expected["search"]  # both sides were picked
    overrides = "strangler_target_overrides_total"
    assert value(scraped, overrides, route="search", upstream="search") == 1
    assert value(scraped, "strangler_target_overrides_ignored_total", route="search") == 1
    assert value(scraped, "strangler_sticky_cookies_set_total", route="search") == 1


async def test_route_states_shares_and_the_evidence_epoch(canary: test_canary.Stack) -> None:
    gw = canary.gateway
    before = await admin_scrape(gw)
    started = gw.app.gateway.evidence.epochs["search"].started
    canary.write(50, 50)
    canary.reload()
    after = await admin_scrape(gw)

    def states(scraped: Samples, route: str) -> dict[str, float]:
        found = series(scraped, "strangler_route_state")
        return {dict(k)["state"]: v for k, v in found.items() if ("route", route) in k}

    assert states(before, "search") == {"legacy": 0, "shadow": 0, "canary": 1, "migrated": 0}
    assert states(before, "products") == {"legacy": 1, "shadow": 0, "canary": 0, "migrated": 0}
    share = "strangler_route_weight_ratio"
    assert value(before, share, route="search", upstream="legacy") == 0.7
    assert value(before, share, route="search", upstream="search") == 0.3
    assert value(before, share, route="products", upstream="legacy") == 1
    assert value(after, share, route="search", upstream="search") == 0.5
    since = "strangler_rollout_evidence_since_timestamp_seconds"
    assert value(before, since, route="search") == started
    assert value(after, since, route="search") == gw.app.gateway.evidence.epochs["search"].started
    assert value(before, since, route="products") is None  # legacy: no evidence is kept
