"""Shadow traffic end to end: the client's answer is the primary's; the candidate is compared.

One contract suite for the Mirror port: every test runs with the comparisons in a worker
process (`shadow_worker: {mode: process}`) and in the gateway's own loop (`inline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.shadow.budget import Budget
from gateway.shadow.mirror import BODY_TOO_LARGE, GATEWAY_BUSY, SHADOW_BEHIND, WORKER_DOWN
from tests.support.harness import (
    Gateway,
    admin_auth,
    get,
    raw_request,
    serve,
    serve_gateway,
    write_routes,
)

pytestmark = pytest.mark.anyio

Behaviour = Callable[[int, bytes], tuple[int, dict[str, Any] | bytes]]


@dataclass
class Service:
    """A JSON service whose answer is a function of (call number, request body)."""

    behaviour: Behaviour
    url: str = ""
    calls: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    stall: asyncio.Event | None = None  # when set: wait for it before answering

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append({"method": scope["method"], "path": scope["path"], "headers": headers})
        if self.stall is not None:
            await self.stall.wait()
        status, answer = self.behaviour(self.calls, body)
        payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        content_type = (
            b"application/octet-stream" if isinstance(answer, bytes) else b"application/json"
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(payload)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def service(behaviour: Behaviour) -> AsyncIterator[Service]:
    app = Service(behaviour)
    async with serve(app) as url:
        app.url = url
        yield app


def catalogue(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
    return 200, {"results": [{"id": 1, "price": "9.99"}, {"id": 2, "price": "5.00"}], "total": 2}


@pytest.fixture(params=["process", "inline"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@contextlib.asynccontextmanager
async def shadowed(
    tmp_path: Path,
    mode: str,
    primary: Service,
    candidate: Service,
    shadow: str = "",
    store: str = "",
    worker: str = "",
    busy_limit: str = "100%",
) -> AsyncIterator[Gateway]:
    """A gateway shadowing /search. Its copy budget is off unless `busy_limit` says otherwise:
    here the loop is the test's too (clients, services), and its counts must be exact."""
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{primary.url}"}}\n  search: {{url: "{candidate.url}"}}\n'
        "default: legacy\n"
        f'shadow_store: {{url: "sqlite:///{tmp_path / "shadow.db"}"{store}}}\n'
        f"shadow_worker: {{mode: {mode}, busy_limit: {busy_limit}{worker}}}\n"
        "routes:\n  - name: search\n    path: /search\n    upstream: legacy\n"
        "    shadow:\n      upstream: search\n      timeout: 300ms\n" + shadow,
    )
    async with serve_gateway(routes) as gw:
        yield gw


async def report(gw: Gateway) -> dict[str, Any]:
    await gw.app.mirror.drain()
    response = await raw_request(gw.port, get("/_strangler/shadow", admin_auth()))
    assert response.status == 200
    (route,) = response.json()["routes"]
    assert isinstance(route, dict)
    return route


async def test_identical_answers_are_counted_and_the_candidate_sees_a_marked_copy(
    tmp_path: Path,
    mode: str,
) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            for _ in range(3):
                answer = await raw_request(gw.port, get("/search?q=lamp", "X-User-Id: spoof"))
                assert answer.status == 200 and answer.header("x-strangler-upstream") == "legacy"
            summary = await report(gw)
    assert (summary["mirrored"], summary["compared"], summary["identical"]) == (3, 3, 3)
    assert summary["identical_pct"] == 100.0
    copy = candidate.seen[0]
    assert copy["path"] == "/search" and copy["headers"]["x-strangler-shadow"] == "1"
    assert "x-user-id" not in copy["headers"]  # the same header rules as the primary's copy
    assert "x-strangler-shadow" not in primary.seen[0]["headers"]


async def test_a_differing_field_is_reported_with_its_path(tmp_path: Path, mode: str) -> None:
    def rounded(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        answer["results"][1]["price"] = "5.0"
        return status, answer

    async with service(catalogue) as primary, service(rounded) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            await raw_request(gw.port, get("/search"))
            await raw_request(gw.port, get("/search"))
            summary = await report(gw)
    assert (summary["compared"], summary["different"]) == (2, 2)
    top = summary["top_differences"][0]
    assert (top["path"], top["kind"], top["count"]) == ("$.results[*].price", "value_changed", 2)


@pytest.mark.parametrize("failure", ["stall", "500", "garbage", "refused"])
async def test_a_failing_candidate_never_changes_the_clients_answer(
    tmp_path: Path, mode: str, failure: str
) -> None:
    def broken(calls: int, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        return (500, {"error": "boom"}) if failure == "500" else (200, b"\x00\xff not json")

    async with service(catalogue) as primary, service(broken) as candidate:
        if failure == "stall":
            candidate.stall = asyncio.Event()
        if failure == "refused":
            candidate.url = "http://127.0.0.1:9"
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            answer = await raw_request(gw.port, get("/search"))
            assert answer.status == 200
            assert answer.json() == catalogue(1, b"")[1]
            summary = await report(gw)
            if candidate.stall is not None:
                candidate.stall.set()
    if failure in ("stall", "refused"):
        assert (summary["candidate_errors"], summary["compared"]) == (1, 0)
    else:
        assert (summary["different"], summary["compared"]) == (1, 1)


async def test_unsafe_methods_are_not_mirrored_by_default(tmp_path: Path, mode: str) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            post = get("/search", "Content-Length: 2").replace(b"GET", b"POST", 1) + b"{}"
            assert (await raw_request(gw.port, post)).status == 200
            await gw.app.mirror.drain()
    assert candidate.calls == 0 and primary.calls == 1


async def test_writes_when_the_route_says_so_and_the_body_cap(tmp_path: Path, mode: str) -> None:
    shadow = "      methods: [POST]\n      writes: true\n      max_body: 10B\n"
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate, shadow) as gw:
            small = get("/search", "Content-Length: 2").replace(b"GET", b"POST", 1) + b"{}"
            big = get("/search", "Content-Length: 20").replace(b"GET", b"POST", 1) + b"x" * 20
            chunked = (
                get("/search", "Transfer-Encoding: chunked").replace(b"GET", b"POST", 1)
                + b"14\r\n"
                + b"y" * 20
                + b"\r\n0\r\n\r\n"
            )
            for request in (small, big, chunked):
                assert (await raw_request(gw.port, request)).status == 200
            summary = await report(gw)
            stats = gw.app.mirror.stats["search"]
    assert candidate.calls == 1  # only the small body was mirrored
    assert (stats.mirrored, stats.dropped) == (3, 2)
    assert (summary["dropped"], summary["drops"]) == (2, {BODY_TOO_LARGE: 2})


async def test_noise_learning_marks_a_field_that_changes_on_every_call(
    tmp_path: Path, mode: str
) -> None:
    def clock(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        return status, {**answer, "generated_at": f"call-{calls}"}

    async with service(clock) as primary, service(clock) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate, "      noise: auto\n") as gw:
            for _ in range(3):
                await raw_request(gw.port, get("/search"))
                await gw.app.mirror.drain()  # one at a time: the learned noise applies next
            summary = await report(gw)
    assert summary["noise_only"] >= 2
    assert [n["path"] for n in summary["top_noisy"]] == ["$.generated_at"]


async def test_overload_drops_copies_instead_of_queueing(tmp_path: Path, mode: str) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        candidate.stall = asyncio.Event()
        async with shadowed(tmp_path, mode, primary, candidate, worker=", concurrency: 2") as gw:
            answers = await asyncio.gather(
                *(raw_request(gw.port, get("/search")) for _ in range(5))
            )
            assert [a.status for a in answers] == [200] * 5
            await gw.app.mirror.flush()  # the worker's counters are in
            stats = gw.app.mirror.stats["search"]
            assert (stats.mirrored, stats.dropped, stats.compared) == (5, 3, 0)
            candidate.stall.set()
            summary = await report(gw)
    assert (summary["mirrored"], summary["dropped"], summary["identical"]) == (5, 3, 2)
    assert summary["drops"] == {SHADOW_BEHIND: 3}


async def test_strangler_shadow_report_prints_the_same_numbers(tmp_path: Path, mode: str) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            await raw_request(gw.port, get("/search"))
            await report(gw)
    printed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "shadow",
            "report",
            "--routes",
            str(tmp_path / "routes.yaml"),
            "--since",
            "1h",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    assert "search" in printed.stdout and "100" in printed.stdout


async def test_the_store_keeps_at_most_retain_comparisons(tmp_path: Path, mode: str) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate, store=", retain: 2") as gw:
            await asyncio.gather(*(raw_request(gw.port, get("/search")) for _ in range(5)))
            summary = await report(gw)
    assert gw.app.mirror.stats["search"].mirrored == 5
    assert summary["mirrored"] == 2  # the first flush swept the store down to `retain`


async def test_per_route_stats_in_the_gateway_match_the_report(tmp_path: Path, mode: str) -> None:
    def rounded(calls: int, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = catalogue(calls, body)
        if calls % 2:
            answer["results"][0]["price"] = "10.00"
        return status, answer

    async with service(catalogue) as primary, service(rounded) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate) as gw:
            for _ in range(6):
                await raw_request(gw.port, get("/search"))
            summary = await report(gw)
            stats = gw.app.mirror.stats["search"]
    assert (stats.mirrored, stats.matched, stats.differed, stats.dropped) == (6, 3, 3, 0)
    assert (summary["mirrored"], summary["identical"], summary["different"]) == (6, 3, 3)
    assert sum(stats.latency.counts) == 6 and stats.latency.total > 0


def shadow_workers() -> list[int]:
    """The pids of this test process's shadow workers."""
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "gateway.shadow.worker"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


async def test_a_worker_that_cannot_keep_up_makes_the_gateway_drop_and_count(
    tmp_path: Path,
) -> None:
    def big(calls: int, body: bytes) -> tuple[int, bytes]:
        return 200, b"x" * 200_000  # each copy carries the primary's 200 kB answer

    async with service(big) as primary, service(big) as candidate:
        async with shadowed(
            tmp_path, "process", primary, candidate, worker=", buffer: 64KiB"
        ) as gw:
            await raw_request(gw.port, get("/search"))
            await gw.app.mirror.flush()  # the worker runs and has compared the first copy
            (worker,) = shadow_workers()
            os.kill(worker, signal.SIGSTOP)  # it takes nothing more from the socket
            try:
                for _ in range(20):
                    answer = await raw_request(gw.port, get("/search"))
                    assert answer.status == 200 and len(answer.body) == 200_000
                dropped = gw.app.mirror.stats["search"].dropped
            finally:
                os.kill(worker, signal.SIGCONT)
            summary = await report(gw)
            stats = gw.app.mirror.stats["search"]
    # the socket's buffer and 64 KiB hold a few copies; the rest were dropped, not queued
    assert 0 < dropped < 20
    assert (stats.mirrored, stats.dropped) == (21, dropped)
    assert (summary["mirrored"], summary["dropped"]) == (21, dropped)
    assert summary["compared"] == 21 - dropped


async def test_a_worker_that_dies_is_replaced_and_the_clients_never_notice(
    tmp_path: Path,
) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, "process", primary, candidate) as gw:
            await raw_request(gw.port, get("/search"))
            await gw.app.mirror.drain()
            (first,) = shadow_workers()
            os.kill(first, signal.SIGKILL)
            deadline = asyncio.get_running_loop().time() + 30
            while shadow_workers() in ([], [first]):  # until the gateway started another
                answer = await raw_request(gw.port, get("/search"))
                assert answer.status == 200 and answer.json() == catalogue(1, b"")[1]
                assert asyncio.get_running_loop().time() < deadline, "no new worker"
                await asyncio.sleep(0.05)  # pace the requests while the gateway waits 1 s
            await gw.app.mirror.drain()
            before = gw.app.mirror.stats["search"].identical
            await raw_request(gw.port, get("/search"))
            await gw.app.mirror.drain()
            assert gw.app.mirror.stats["search"].identical == before + 1
            (summary,) = await gw.app.mirror.store.summary()
            drops = gw.app.mirror.stats["search"].drops
    # the copies dropped while no worker ran reach the store by the next one (if any were:
    # a worker's second start may come at once, when its first was a second ago or more)
    assert set(drops) <= {WORKER_DOWN}
    assert summary.drops == {reason: n for reason, n in drops.items() if n}


async def test_copies_the_worker_has_not_acknowledged_are_capped_and_dropped_in_the_gateway(
    tmp_path: Path,
) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(
            tmp_path, "process", primary, candidate, worker=", concurrency: 2"
        ) as gw:
            await raw_request(gw.port, get("/search"))
            await gw.app.mirror.drain()  # the worker has compared and acknowledged the first
            (worker,) = shadow_workers()
            os.kill(worker, signal.SIGSTOP)  # it acknowledges nothing more
            try:
                for _ in range(10):
                    answer = await raw_request(gw.port, get("/search"))
                    assert answer.status == 200 and answer.json() == catalogue(1, b"")[1]
                dropped = gw.app.mirror.stats["search"].dropped
            finally:
                os.kill(worker, signal.SIGCONT)
            summary = await report(gw)
    # 2 * concurrency copies outstanding; the other 6 dropped at once, small as they are
    assert dropped == 6
    # the 4 reach the worker together: it compares `concurrency` of them and drops 2
    assert (summary["mirrored"], summary["dropped"], summary["compared"]) == (11, 8, 3)
    assert summary["drops"] == {SHADOW_BEHIND: 8}  # the gateway's 6 and the worker's 2


@dataclass
class Load:
    """The clock and busy seconds a `Budget` reads, moved by the test."""

    now: float = 0.0
    used: float = 0.0

    def interval(self, budget: Budget, busy: float) -> None:
        self.now += 0.1
        self.used += 0.1 * busy
        budget.update()


async def test_a_busy_gateway_drops_copies_and_counts_them_before_keeping_anything(
    tmp_path: Path, mode: str
) -> None:
    async with service(catalogue) as primary, service(catalogue) as candidate:
        async with shadowed(tmp_path, mode, primary, candidate, busy_limit="80%") as gw:
            load = Load()
            budget = Budget(0.8, floor=2, usage=lambda: load.used, clock=lambda: load.now)
            gw.app.mirror.budget.close()
            gw.app.mirror.budget = budget
            budget.update()
            for _ in range(3):  # busy 95% of three intervals: the share halves three times
                load.interval(budget, 0.95)
            assert budget.share == 0.125
            # together, so that the budget's own timer cannot end the interval in between
            answers = await asyncio.gather(
                *(raw_request(gw.port, get("/search")) for _ in range(10))
            )
            assert [a.json() for a in answers] == [catalogue(1, b"")[1]] * 10
            summary = await report(gw)
            stats = gw.app.mirror.stats["search"]
            metrics = (await raw_request(gw.port, get("/metrics"))).body.decode()
            (stored,) = await gw.app.mirror.store.summary(route="search")
    # the floor's 2, then one in 1 / 0.125 = 8; the other 7 dropped as the gateway was busy
    assert candidate.calls == 3
    assert (stats.mirrored, stats.drops[GATEWAY_BUSY], stats.dropped) == (10, 7, 7)
    assert (summary["mirrored"], summary["dropped"], summary["identical"]) == (10, 7, 3)
    assert (stored.dropped, stored.drops) == (7, {GATEWAY_BUSY: 7})  # in the store, by reason
    assert summary["drops"] == {GATEWAY_BUSY: 7}
    assert 'strangler_shadow_dropped_total{reason="gateway_busy",route="search"} 7.0' in metrics
