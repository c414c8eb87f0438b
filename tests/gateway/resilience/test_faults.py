"""Fault injection with real sockets on loopback: a real gateway in front of an upstream that
refuses, resets, stalls, trickles and answers 503 (fault_server.py), and the gateway's
timeouts, retries, breaker and load shedding against it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_server import FaultServer, refused_url, serve_faults
from tests.support.harness import (
    Gateway,
    RawResponse,
    admin_auth,
    get,
    raw_request,
    serve_gateway,
    write_routes,
)

pytestmark = pytest.mark.anyio

FAST_RETRIES = "retries: {attempts: 3, backoff: 1ms, max_backoff: 2ms}"


class FakeClock:
    """The resilience layer's clock (breakers, budgets), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def faults() -> AsyncIterator[FaultServer]:
    async with serve_faults() as server:
        yield server


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = get(path).replace(b"GET", method.encode(), 1)
    if body or method in ("POST", "PUT"):
        head = head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body)
    return head + body


async def send(gw: Gateway, method: str, path: str, body: bytes = b"") -> RawResponse:
    return await raw_request(gw.port, request(method, path, body))


def stats(gw: Gateway, upstream: str = "flaky") -> dict[str, Any]:
    described: dict[str, Any] = gw.app.resilience.describe(gw.app.watcher.table)
    return dict(described["upstreams"][upstream])


@pytest.fixture
def routes(tmp_path: Path) -> Any:
    def write(upstream: str, extra_routes: str = "", top: str = "", url: str = "") -> Path:
        path = tmp_path / "routes.yaml"
        write_routes(
            path,
            f"""
{top}
upstreams:
  flaky:
    url: "{url}"
    {upstream}
default: flaky
routes:
  - {{name: all, path: /, upstream: flaky}}
{extra_routes}
""",
        )
        return path

    return write


async def test_refused_connections_are_retried_for_idempotent_methods_only(routes: Any) -> None:
    path = routes(f"{FAST_RETRIES}\n    breaker: off", url=refused_url())
    async with serve_gateway(path) as gw:
        response = await send(gw, "GET", "/items")
        assert response.status == 502
        assert response.json()["error"] == "upstream_unavailable"
        assert stats(gw)["attempts"] == 3 and stats(gw)["retries"]["retried"] == 2
        assert (await send(gw, "POST", "/items", b"{}")).status == 502
        assert stats(gw)["attempts"] == 4  # POST: one attempt, never retried


async def test_a_reset_before_the_head_is_retried_for_get_not_for_post(
    routes: Any, faults: FaultServer
) -> None:
    async with serve_gateway(routes(FAST_RETRIES, url=faults.url)) as gw:
        response = await send(gw, "GET", "/reset-head")
        assert response.status == 502 and response.json()["error"] == "upstream_unavailable"
        assert faults.hits["reset-head"] == 3
        assert (await send(gw, "POST", "/reset-head", b"x")).status == 502
        assert faults.hits["reset-head"] == 4


async def test_put_is_retried_only_where_the_route_says_and_never_once_its_body_was_sent(
    routes: Any, faults: FaultServer
) -> None:
    extra = "  - {name: puts, path: /puts, upstream: flaky, retries: {methods: [PUT]}}"
    async with serve_gateway(routes(FAST_RETRIES, extra, url=faults.url)) as gw:
        assert (await send(gw, "PUT", "/other/reset-head")).status == 502
        assert faults.hits["reset-head"] == 1  # the catch-all route does not retry PUT
        assert (await send(gw, "PUT", "/puts/reset-head")).status == 502
        assert faults.hits["reset-head"] == 4  # bodiless: replayable, 3 attempts
        assert (await send(gw, "PUT", "/puts/reset-head", b'{"a":1}')).status == 502
        assert faults.hits["reset-head"] == 5  # the body was streamed: no replay
        assert faults.bodies[-1] == 7


async def test_a_put_body_not_yet_read_is_retried_after_a_refused_connect(
    routes: Any,
) -> None:
    extra = "  - {name: puts, path: /puts, upstream: flaky, retries: {methods: [PUT]}}"
    path = routes(f"{FAST_RETRIES}\n    breaker: off", extra, url=refused_url())
    async with serve_gateway(path) as gw:
        assert (await send(gw, "PUT", "/puts/x", b'{"a":1}')).status == 502
        assert stats(gw)["attempts"] == 3  # the connect failed before any body byte was read


async def test_a_reset_mid_response_truncates_it_and_is_not_retried(
    routes: Any, faults: FaultServer
) -> None:
    async with serve_gateway(routes(FAST_RETRIES, url=faults.url)) as gw:
        with pytest.raises(asyncio.IncompleteReadError):
            await send(gw, "GET", "/reset-body")
        assert faults.hits["reset-body"] == 1


async def test_a_stalled_head_is_a_504_and_is_not_retried(routes: Any, faults: FaultServer) -> None:
    path = routes(f"first_byte_timeout: 200ms\n    {FAST_RETRIES}", url=faults.url)
    async with serve_gateway(path) as gw:
        response = await send(gw, "GET", "/stall-head")
        assert response.status == 504
        assert response.json()["error"] == "upstream_timeout"
        assert response.json()["detail"] == "the upstream did not answer in time"
        assert faults.hits["stall-head"] == 1
        assert stats(gw)["timeouts"] == 1


async def test_the_deadline_ends_a_stalled_or_trickling_body(
    routes: Any, faults: FaultServer
) -> None:
    async with serve_gateway(routes("timeout: 30s\n    deadline: 300ms", url=faults.url)) as gw:
        with pytest.raises(asyncio.IncompleteReadError):
            await send(gw, "GET", "/stall-body")  # idle 30s: only the deadline ends it
        with pytest.raises(asyncio.IncompleteReadError):
            await send(gw, "GET", "/trickle")  # never idle: only the deadline ends it


async def test_a_route_deadline_overrides_the_upstream_timeouts(
    routes: Any, faults: FaultServer
) -> None:
    extra = "  - {name: quick, path: /quick, upstream: flaky, deadline: 200ms}"
    async with serve_gateway(routes("timeout: 30s", extra, url=faults.url)) as gw:
        response = await send(gw, "GET", "/quick/stall-head")
        assert response.status == 504
        assert response.json()["detail"] == "the request's deadline passed"


async def test_503_bursts_are_retried_within_the_attempt_cap(
    routes: Any, faults: FaultServer
) -> None:
    async with serve_gateway(routes(FAST_RETRIES, url=faults.url)) as gw:
        faults.failures = 2
        response = await send(gw, "GET", "/flaky")
        assert response.status == 200 and faults.hits["flaky"] == 3
        faults.failures = 5
        response = await send(gw, "GET", "/flaky")
        assert response.status == 503  # the upstream's own answer, after 3 attempts
        assert faults.hits["flaky"] == 6 and faults.failures == 2
        assert (await send(gw, "POST", "/flaky", b"{}")).status == 503
        assert faults.hits["flaky"] == 7


async def test_the_retry_budget_caps_retries_at_its_share_of_requests(
    routes: Any, faults: FaultServer
) -> None:
    budget = "retries: {attempts: 5, backoff: 1ms, budget: 50%, min_per_second: 0}"
    async with serve_gateway(routes(f"{budget}\n    breaker: off", url=faults.url)) as gw:
        gw.app.resilience.clock = FakeClock()  # one window for the whole test
        faults.failures = 1000
        for _ in range(10):
            assert (await send(gw, "GET", "/flaky")).status == 503
        # a retry needs retries + 1 <= 50% of requests: requests 2, 4, 6, 8, 10 get one each,
        # and every request is then refused the next one it asks for
        assert faults.hits["flaky"] == 15
        assert stats(gw)["retries"] == {"retried": 5, "denied": 10}


async def test_the_breaker_opens_sheds_half_opens_and_closes(
    routes: Any, faults: FaultServer
) -> None:
    breaker = "breaker: {minimum_calls: 4, failure_rate: 50%, cool_down: 30s, probes: 2}"
    path = routes(f"retries: off\n    {breaker}", url=faults.url)
    async with serve_gateway(path) as gw:
        clock = gw.app.resilience.clock = FakeClock()
        faults.failures = 3
        statuses = [(await send(gw, "GET", "/flaky")).status for _ in range(4)]
        assert statuses == [503, 503, 503, 200]  # 3 of 4 failed: open
        assert stats(gw)["breaker"]["state"] == "open"
        shed = await send(gw, "GET", "/flaky")
        assert shed.status == 503 and shed.json()["error"] == "circuit_open"
        assert shed.header("retry-after") == "30"
        assert faults.hits["flaky"] == 4  # the upstream was not asked

        clock.now += 31
        admin = await raw_request(gw.port, get("/_strangler/upstreams", admin_auth()))
        assert admin.json()["upstreams"]["flaky"]["breaker"]["state"] == "half_open"
        assert (await send(gw, "GET", "/flaky")).status == 200  # probe 1
        assert stats(gw)["breaker"]["state"] == "half_open"
        assert (await send(gw, "GET", "/flaky")).status == 200  # probe 2
        assert stats(gw)["breaker"]["state"] == "closed"
        assert faults.hits["flaky"] == 6


async def test_a_failed_probe_opens_the_breaker_again(routes: Any, faults: FaultServer) -> None:
    breaker = "breaker: {minimum_calls: 2, failure_rate: 100%, cool_down: 5s, probes: 1}"
    path = routes(f"retries: off\n    {breaker}", url=faults.url)
    async with serve_gateway(path) as gw:
        clock = gw.app.resilience.clock = FakeClock()
        faults.failures = 3
        for _ in range(2):
            assert (await send(gw, "GET", "/flaky")).status == 503
        assert (await send(gw, "GET", "/flaky")).json()["error"] == "circuit_open"
        clock.now += 5
        assert (await send(gw, "GET", "/flaky")).status == 503  # the probe fails
        reopened = await send(gw, "GET", "/flaky")
        assert reopened.json()["error"] == "circuit_open"
        assert reopened.header("retry-after") == "5"
        assert stats(gw)["breaker"]["opened"] == 2
        assert faults.hits["flaky"] == 3


async def test_a_refusing_upstream_opens_its_breaker(routes: Any) -> None:
    path = routes("retries: off\n    breaker: {minimum_calls: 3}", url=refused_url())
    async with serve_gateway(path) as gw:
        for _ in range(3):
            assert (await send(gw, "GET", "/x")).status == 502
        assert (await send(gw, "GET", "/x")).json()["error"] == "circuit_open"
        assert stats(gw)["attempts"] == 3


async def test_a_canarys_failing_target_opens_its_own_breaker_not_the_routes_main_ones(
    tmp_path: Path, faults: FaultServer
) -> None:
    path = tmp_path / "routes.yaml"
    write_routes(
        path,
        f"""
upstreams:
  healthy: {{url: "{faults.url}", breaker: {{minimum_calls: 3}}}}
  broken: {{url: "{refused_url()}", retries: off, breaker: {{minimum_calls: 3}}}}
default: healthy
routes:
  - {{name: canary, path: /, upstream: {{healthy: 50, broken: 50}}}}
""",
    )
    async with serve_gateway(path) as gw:
        split = gw.app.watcher.table.routes[0].rollout.split
        assert split is not None
        cookies = {}  # a sticky cookie that lands on each upstream
        for n in range(1000):
            value = f"{n:032x}"
            cookies.setdefault(split.pick(b"c:" + value.encode()), value)
        assert cookies.keys() == {"healthy", "broken"}

        def on(upstream: str) -> bytes:
            return get("/ok", f"Cookie: strangler_sticky={cookies[upstream]}")

        for _ in range(3):
            assert (await raw_request(gw.port, on("broken"))).status == 502
        assert (await raw_request(gw.port, on("broken"))).json()["error"] == "circuit_open"
        assert stats(gw, "broken")["breaker"]["state"] == "open"
        assert (await raw_request(gw.port, on("healthy"))).status == 200
        assert stats(gw, "healthy")["breaker"]["state"] == "closed"
        assert (stats(gw, "healthy")["attempts"], stats(gw, "broken")["attempts"]) == (1, 3)


SHEDDING = "load_shedding: {max_in_flight: 100, reserve: {critical: 25%, normal: 25%}}"
PRIORITY_ROUTES = """
  - {name: reports, path: /reports, upstream: flaky, priority: background}
  - {name: checkout, path: /checkout, upstream: flaky, priority: critical}"""


async def test_overload_sheds_background_then_normal_while_critical_succeeds(
    routes: Any, faults: FaultServer
) -> None:
    # upstream limit 4: critical may fill 4, normal 3, background 2
    path = routes("max_in_flight: 4", PRIORITY_ROUTES, SHEDDING, url=faults.url)
    async with serve_gateway(path) as gw:
        held = [asyncio.create_task(send(gw, "GET", "/reports/hold")) for _ in range(2)]
        await faults.wait_held(2)
        shed = await send(gw, "GET", "/reports/ok")
        assert shed.status == 503 and shed.json()["error"] == "overloaded"
        assert shed.header("retry-after") == "1"
        assert (await send(gw, "GET", "/checkout/ok")).status == 200
        held.append(asyncio.create_task(send(gw, "GET", "/hold")))  # normal: the 3rd slot
        await faults.wait_held(3)
        assert (await send(gw, "GET", "/ok")).status == 503  # normal stops at 3
        assert (await send(gw, "GET", "/reports/ok")).status == 503
        for _ in range(3):
            assert (await send(gw, "GET", "/checkout/ok")).status == 200  # the 4th slot
        assert faults.hits["ok"] == 4  # only the critical ones reached the upstream
        assert stats(gw)["shed"] == {"critical": 0, "normal": 1, "background": 2}
        faults.release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert stats(gw)["in_flight"] == 0


async def test_the_gateway_wide_limit_spans_upstreams(tmp_path: Path, faults: FaultServer) -> None:
    path = tmp_path / "routes.yaml"
    write_routes(
        path,
        f"""
load_shedding: {{max_in_flight: 2, reserve: {{critical: 50%, normal: 0%}}}}
upstreams:
  a: {{url: "{faults.url}"}}
  b: {{url: "{faults.url}"}}
routes:
  - {{name: a, path: /a, upstream: a}}
  - {{name: b, path: /b, upstream: b}}
  - {{name: b-critical, path: /b/critical, upstream: b, priority: critical}}
""",
    )
    async with serve_gateway(path) as gw:
        held = asyncio.create_task(send(gw, "GET", "/a/hold"))
        await faults.wait_held(1)
        shed = await send(gw, "GET", "/b/ok")
        assert shed.status == 503 and "the gateway" in shed.json()["detail"]
        assert (await send(gw, "GET", "/b/critical/ok")).status == 200
        faults.release.set()
        assert (await held).status == 200
        assert (await send(gw, "GET", "/b/ok")).status == 200
        admin = await raw_request(gw.port, get("/_strangler/upstreams", admin_auth()))
        assert admin.json()["gateway"] == {
            "in_flight": 0,
            "max_in_flight": 2,
            "shed": {"critical": 0, "normal": 1, "background": 0},
        }


async def test_admin_upstreams_shows_each_upstream(routes: Any, faults: FaultServer) -> None:
    async with serve_gateway(routes("max_in_flight: 7", url=faults.url)) as gw:
        assert (await send(gw, "GET", "/ok")).status == 200
        admin = await raw_request(gw.port, get("/_strangler/upstreams", admin_auth()))
        assert admin.status == 200
        flaky = admin.json()["upstreams"]["flaky"]
        assert flaky["url"] == faults.url
        assert flaky["max_in_flight"] == 7
        assert (flaky["requests"], flaky["attempts"], flaky["failures"]) == (1, 1, 0)
        assert flaky["breaker"]["state"] == "closed"
        assert flaky["breaker"]["calls_in_window"] == 1
        assert flaky["breaker"]["retry_after"] is None


class Lines(logging.Handler):
    """Every warning or error the gateway and its server layer log, as their messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def logged() -> Iterator[Lines]:
    lines = Lines()
    loggers = [logging.getLogger(name) for name in ("strangler", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(lines)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(lines)


async def test_a_reset_mid_body_is_a_failure_for_the_breaker_logged_once(
    routes: Any, faults: FaultServer
) -> None:
    breaker = "breaker: {minimum_calls: 2, failure_rate: 100%, cool_down: 30s, probes: 1}"
    path = routes(f"retries: off\n    {breaker}", url=faults.url)
    async with serve_gateway(path) as gw:
        gw.app.resilience.clock = FakeClock()
        with logged() as lines:
            for _ in range(2):
                with pytest.raises(asyncio.IncompleteReadError):
                    await send(gw, "GET", "/reset-body")  # a good head, then a reset
            shed = await send(gw, "GET", "/ok")
        assert shed.json()["error"] == "circuit_open"
        assert stats(gw)["failures"] == 2 and stats(gw)["breaker"]["state"] == "open"
    # one line for the first failure, the second within the same second left out (and
    # counted in the next line); nothing from the server layer about the cut response
    assert len(lines.messages) == 1, lines.messages
    assert lines.messages[0].startswith("upstream flaky failed mid-response")


async def test_a_stalled_body_is_a_timeout_for_the_upstreams_stats(
    routes: Any, faults: FaultServer
) -> None:
    async with serve_gateway(routes("timeout: 200ms\n    retries: off", url=faults.url)) as gw:
        with pytest.raises(asyncio.IncompleteReadError):
            await send(gw, "GET", "/stall-body")
        assert (stats(gw)["failures"], stats(gw)["timeouts"]) == (1, 1)
        assert (await send(gw, "GET", "/ok")).status == 200
        assert stats(gw)["failures"] == 1  # a whole body is a success
