"""GET /metrics end to end: parsed with prometheus_client's own parsers, values from the traffic
sent, and who may read it (`metrics.access`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from cdc.metrics import Metrics as CdcMetrics
from gateway.base.histogram import Histogram
from gateway.shadow.mirror import DROP_REASONS
from tests.gateway.shadow.test_shadow import catalogue, service, shadowed
from tests.support import ROOT
from tests.support.harness import Gateway, Recorder, get, raw_request, serve_gateway, write_routes
from tests.support.opa_server import serve_opa

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"
SECRET = "metrics-test-secret-0123456789abcdef0123"
SCRAPE_TOKEN = "scrape-token-0123456789abcdef0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, parse: Callable[[str], Any] = text_string_to_metric_families) -> Samples:
    """Every sample by (name, sorted labels); the parser rejects malformed exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse(text)
        for s in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def token(*roles: str, sub: str = "alice") -> str:
    now = int(time.time())
    claims = {"sub": sub, "roles": list(roles), "iat": now, "exp": now + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "dev"})


def bearer(value: str) -> str:
    return f"Authorization: Bearer {value}"


async def scrape(gw: Gateway, *headers: str) -> Samples:
    response = await raw_request(gw.port, get("/metrics", *headers))
    assert response.status == 200, response.body
    assert (response.header("content-type") or "").startswith("text/plain; version=0.0.4")
    return samples(response.body.decode())


def open_routes(tmp_path: Path, upstream: Recorder, extra: str = "") -> Path:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f"""
upstreams:
  legacy: {{url: "{upstream.url}", timeout: 2s}}
  search: {{url: "{upstream.url}", timeout: 2s}}
  gone: {{url: "http://127.0.0.1:9", timeout: 1s, connect_timeout: 1s}}
default: legacy
metrics: {{access: open}}
routes:
  - {{name: search, path: /search, methods: [GET], upstream: search}}
  - {{name: api, path: /api, upstream: legacy}}
  - {{name: broken, path: /broken, upstream: gone}}
{extra}
""",
    )
    return routes


def secured_routes(tmp_path: Path, upstream: Recorder, metrics: str = "", authz: str = "") -> Path:
    shutil.copytree(POLICIES, tmp_path / "policies", dirs_exist_ok=True)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f'upstreams:\n  legacy: {{url: "{upstream.url}", timeout: 2s}}\ndefault: legacy\n'
        "auth:\n  default: required\n"
        f'  keys:\n    - {{id: dev, algorithm: HS256, secret: "{SECRET}"}}\n'
        f"authz: {authz or '{engine: embedded, policies: policies, cache: off}'}\n"
        f"{metrics}\n"
        "routes:\n"
        "  - {name: search, path: /search, upstream: legacy, auth: optional}\n"
        "  - {name: products, path: /products, upstream: legacy, auth: optional}\n"
        "  - {name: reports, path: /reports, upstream: legacy, authz_failure: open}\n"
    )
    return routes


@pytest.fixture
async def open_gateway(upstream: Recorder, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with serve_gateway(open_routes(tmp_path, upstream)) as gw:
        yield gw


async def test_requests_by_route_upstream_and_status_with_latency(open_gateway: Gateway) -> None:
    gw = open_gateway
    for path, times in (("/search?q=a", 5), ("/api/items", 3), ("/elsewhere", 2), ("/broken", 2)):
        for _ in range(times):
            await raw_request(gw.port, get(path))
    await raw_request(gw.port, get("/a/%2e%2e/b"))  # 400 bad_path: no route, no upstream
    scraped = await scrape(gw)

    requests = "strangler_requests_total"
    assert value(scraped, requests, route="search", upstream="search", status="200") == 5
    assert value(scraped, requests, route="api", upstream="legacy", status="200") == 3
    assert value(scraped, requests, route="(none)", upstream="legacy", status="200") == 2
    assert value(scraped, requests, route="broken", upstream="gone", status="502") == 2
    assert value(scraped, requests, route="(none)", upstream="(gateway)", status="400") == 1
    total = sum(v for (name, _), v in scraped.items() if name == requests)
    assert total == 13  # the scrape itself is counted once it has answered, not before

    duration = "strangler_request_duration_seconds"
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in scraped.items()
        if name == duration + "_bucket" and ("route", "search") in labels
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 5)  # cumulative
    assert value(scraped, duration + "_count", route="search", upstream="search") == 5
    assert 0 < (value(scraped, duration + "_sum", route="search", upstream="search") or 0) < 5
    assert value(scraped, "strangler_routes_info", version=gw.app.watcher.table.version) == 1
    assert value(scraped, "strangler_routes_reload_rejected") == 0
    assert (value(scraped, "process_resident_memory_bytes") or 0) > 0

    again = await scrape(gw)  # the first scrape is now counted
    assert value(again, requests, route="(none)", upstream="(gateway)", status="200") == 1


async def test_openmetrics_when_the_scraper_asks_for_it(open_gateway: Gateway) -> None:
    await raw_request(open_gateway.port, get("/search"))
    accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = await raw_request(open_gateway.port, get("/metrics", accept))
    assert (response.header("content-type") or "").startswith("application/openmetrics-text")
    scraped = samples(response.body.decode(), openmetrics_families)
    assert (
        value(scraped, "strangler_requests_total", route="search", upstream="search", status="200")
        == 1
    )


async def test_a_rejected_reload_shows_and_the_version_does_not_change(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = open_routes(tmp_path, upstream)
    async with serve_gateway(routes) as gw:
        version = gw.app.watcher.table.version
        routes.write_text(routes.read_text().replace("default: legacy", "default: nowhere"))
        assert not gw.app.watcher.reload()
        scraped = await scrape(gw)
    assert value(scraped, "strangler_routes_reload_rejected") == 1
    assert value(scraped, "strangler_routes_info", version=version) == 1


async def test_authz_decisions_allow_deny_and_error(upstream: Recorder, tmp_path: Path) -> None:
    async with serve_opa(POLICIES) as opa:
        authz = f'{{engine: opa, url: "{opa.url}", timeout: 200ms, cache: off}}'
        routes = secured_routes(tmp_path, upstream, "metrics: {access: open}", authz)
        async with serve_gateway(routes) as gw:
            for _ in range(3):
                assert (await raw_request(gw.port, get("/search"))).status == 200
            denied = await raw_request(gw.port, get("/users/bob", bearer(token("buyer"))))
            assert denied.status == 403
            opa.mode = "error"
            for _ in range(2):  # the engine fails: reports fails open, products closed
                assert (await raw_request(gw.port, get("/reports", bearer(token())))).status == 200
            assert (await raw_request(gw.port, get("/products"))).status == 403
            scraped = await scrape(gw)
    decisions = "strangler_authz_decisions_total"
    assert value(scraped, decisions, route="search", decision="allow") == 3
    assert value(scraped, decisions, route="(none)", decision="deny") == 1  # /users/bob
    assert value(scraped, decisions, route="reports", decision="error") == 2
    assert value(scraped, decisions, route="products", decision="error") == 1
    assert (
        value(
            scraped, "strangler_requests_total", route="products", upstream="legacy", status="403"
        )
        == 1
    )


@pytest.mark.parametrize("mode", ["process", "inline"])  # the shadow worker's two adapters
async def test_shadow_counters_per_route(tmp_path: Path, mode: str) -> None:
    def drifting(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        return status, {**answer, "total": 3} if calls % 2 else answer

    async with service(catalogue) as primary, service(drifting) as candidate:
        # authz: none, so the default metrics access (policy) lets anyone scrape
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            for _ in range(4):
                assert (await raw_request(gw.port, get("/search?q=x"))).status == 200
            await gw.app.mirror.drain()
            scraped = await scrape(gw)
    assert value(scraped, "strangler_shadow_mirrored_total", route="search") == 4
    comparisons = "strangler_shadow_comparisons_total"
    assert value(scraped, comparisons, route="search", result="identical") == 2
    assert value(scraped, comparisons, route="search", result="different") == 2
    assert value(scraped, comparisons, route="search", result="candidate_error") == 0
    for reason in DROP_REASONS:
        assert value(scraped, "strangler_shadow_dropped_total", route="search", reason=reason) == 0
    assert value(scraped, "strangler_shadow_duration_seconds_count", route="search") == 4


def write_cdc_status(
    path: Path, applied: int, lag: int, *, age: float = 0.0, crashed: bool = False
) -> None:
    """The status file as the bridge itself writes it (cdc/metrics.py)."""
    bridge = CdcMetrics(state="running", restarts=2)
    if crashed:
        bridge.crashed(OverflowError("date value out of range"))
    products = bridge.topic("legacy.public.products")
    products.applied, products.skipped, products.truncates = applied, 2, 1
    bridge.dead_letter("legacy.public.products")  # one poison message, as the consumer counts it
    products.partitions = {0: lag}
    products.last_source_ts_ms = int((time.time() - 4) * 1000)
    products.position = "lsn:123"
    bridge.topic("legacy.public.categories").applied = 7
    bridge.publish(path, force=True)
    if age:
        data = json.loads(path.read_text())
        data["updated_at"] -= age
        path.write_text(json.dumps(data))


async def test_cdc_lag_per_table_from_the_bridges_status_file(
    upstream: Recorder, tmp_path: Path
) -> None:
    status = tmp_path / "var" / "cdc-status.json"
    routes = open_routes(
        tmp_path, upstream, "cdc: {status_file: var/cdc-status.json, stale_after: 10s}"
    )
    async with serve_gateway(routes) as gw:
        missing = await scrape(gw)
        write_cdc_status(status, applied=40, lag=5)
        fresh = await scrape(gw)
        write_cdc_status(status, applied=41, lag=0, age=60)
        stale = await scrape(gw)
        write_cdc_status(status, applied=41, lag=0, crashed=True)
        crashed = await scrape(gw)

    assert value(missing, "strangler_cdc_up") == 0
    assert not [k for k in missing if k[0] == "strangler_cdc_lag_seconds"]

    assert value(fresh, "strangler_cdc_up") == 1
    assert 3 < (value(fresh, "strangler_cdc_lag_seconds", table="public.products") or 0) < 60
    assert value(fresh, "strangler_cdc_lag_seconds", table="public.categories") == 0
    assert value(fresh, "strangler_cdc_lag_events", table="public.products") == 5
    events = "strangler_cdc_events_total"
    assert value(fresh, events, table="public.products", outcome="applied") == 40
    assert value(fresh, events, table="public.products", outcome="skipped") == 2
    assert value(fresh, events, table="public.products", outcome="dead_lettered") == 1
    assert value(fresh, events, table="public.categories", outcome="applied") == 7
    assert value(fresh, events, table="public.products", outcome="truncated") == 1
    assert value(fresh, "strangler_cdc_state", state="running") == 1
    assert value(fresh, "strangler_cdc_state", state="crashed") == 0
    assert value(fresh, "strangler_cdc_restarts") == 2
    assert value(crashed, "strangler_cdc_state", state="crashed") == 1
    assert value(crashed, "strangler_cdc_state", state="stopped") == 0
    assert value(crashed, "strangler_cdc_up") == 0
    assert value(fresh, "strangler_cdc_dead_lettered_total") == 1  # the bridge's DLQ count
    assert (value(fresh, "strangler_cdc_status_age_seconds") or 0) < 10

    assert value(stale, "strangler_cdc_up") == 0
    assert (value(stale, "strangler_cdc_status_age_seconds") or 0) >= 60
    assert not [k for k in stale if k[0] == "strangler_cdc_lag_seconds" and k[1]]
    assert value(stale, "strangler_cdc_dead_lettered_total") is None  # stale counts are not shown
    assert value(missing, "strangler_cdc_dead_lettered_total") is None


async def test_without_a_cdc_section_there_are_no_cdc_metrics(open_gateway: Gateway) -> None:
    scraped = await scrape(open_gateway)
    assert not [name for name, _ in scraped if name.startswith("strangler_cdc_")]


# --- who may read /metrics ------------------------------------------------------------------


async def test_by_default_the_policy_decides_admins_and_scrapers_pass(
    upstream: Recorder, tmp_path: Path
) -> None:
    async with serve_gateway(secured_routes(tmp_path, upstream)) as gw:
        anonymous = await raw_request(gw.port, get("/metrics"))
        buyer = await raw_request(gw.port, get("/metrics", bearer(token("buyer"))))
        admin = await raw_request(gw.port, get("/metrics", bearer(token("admin"))))
        scraper = await raw_request(gw.port, get("/metrics", bearer(token("metrics", sub="prom"))))
        posted = await raw_request(
            gw.port,
            f"POST /metrics HTTP/1.1\r\nHost: g\r\n{bearer(token('admin'))}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode(),
        )
    assert anonymous.status == 401 and anonymous.json()["error"] == "unauthorized"
    assert buyer.status == 403
    assert buyer.json()["detail"] == "metrics need the admin or metrics role"
    assert admin.status == 200 and scraper.status == 200
    assert posted.status == 403  # the policy admits reads only
    assert upstream.seen == []  # never forwarded to the monolith
    scraped = samples(scraper.body.decode())
    assert (
        value(
            scraped, "strangler_requests_total", route="(none)", upstream="(gateway)", status="401"
        )
        == 1
    )


async def test_a_static_scrape_token(
    upstream: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SCRAPE_TOKEN", SCRAPE_TOKEN)
    metrics = "metrics: {access: token, token_env: TEST_SCRAPE_TOKEN}"
    async with serve_gateway(secured_routes(tmp_path, upstream, metrics)) as gw:
        right = await raw_request(gw.port, get("/metrics", bearer(SCRAPE_TOKEN)))
        wrong = await raw_request(gw.port, get("/metrics", bearer(SCRAPE_TOKEN[:-1] + "x")))
        jwt_admin = await raw_request(gw.port, get("/metrics", bearer(token("admin"))))
        none = await raw_request(gw.port, get("/metrics"))
    assert right.status == 200
    assert wrong.status == 401 and "invalid_token" in (wrong.header("www-authenticate") or "")
    assert jwt_admin.status == 401  # the scrape token, and only it
    assert none.status == 401
    assert SCRAPE_TOKEN not in wrong.body.decode()


async def test_access_open_and_a_custom_path(upstream: Recorder, tmp_path: Path) -> None:
    metrics = "metrics: {access: open, path: /internal/metrics}"
    async with serve_gateway(secured_routes(tmp_path, upstream, metrics)) as gw:
        served = await raw_request(gw.port, get("/internal/metrics"))
        forwarded = await raw_request(gw.port, get("/metrics", bearer(token("admin"))))
    assert served.status == 200 and b"strangler_requests_total" in served.body
    assert forwarded.status == 403  # /metrics is an ordinary path now: the policy denies it


async def test_access_off_routes_the_path_like_any_other(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f"""
upstreams:
  legacy: {{url: "{upstream.url}", timeout: 2s}}
metrics: {{access: off}}
routes:
  - {{name: monolith-metrics, path: /metrics, upstream: legacy}}
""",
    )
    async with serve_gateway(routes) as gw:
        response = await raw_request(gw.port, get("/metrics"))
    assert response.status == 200 and response.json()["served_by"] == "upstream"
    assert [s.raw_path for s in upstream.seen] == ["/metrics"]


async def test_scrapes_while_traffic_flows(open_gateway: Gateway) -> None:
    """Counting and rendering share the event loop: scrapes taken mid-traffic parse and
    never go backwards."""
    gw = open_gateway

    async def traffic() -> None:
        for _ in range(40):
            await raw_request(gw.port, get("/search"))

    async def scrapes() -> list[float]:
        seen = []
        for _ in range(5):
            scraped = await scrape(gw)
            seen.append(
                value(
                    scraped,
                    "strangler_requests_total",
                    route="search",
                    upstream="search",
                    status="200",
                )
                or 0
            )
        return seen

    _, seen = await asyncio.gather(traffic(), scrapes())
    assert seen == sorted(seen)
    final = await scrape(gw)
    assert (
        value(final, "strangler_requests_total", route="search", upstream="search", status="200")
        == 40
    )


def test_histogram_buckets_are_inclusive_upper_bounds_counted_cumulatively() -> None:
    observed = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        observed.observe(seconds)
    assert observed.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert observed.total == pytest.approx(4.65)
