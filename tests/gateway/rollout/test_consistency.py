"""Read-your-writes in the gateway, against loopback upstreams: a stand-in monolith that
answers writes with X-Strangler-Commit-Position, a stand-in new service, and the bridge's
`cdc_positions` table written by the test as the bridge would. (The real monolith, capture,
Kafka, bridge and search service: test_read_your_writes.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.app import GatewayApp
from gateway.identity.tokens import mint
from gateway.rollout import sticky
from gateway.rollout.consistency import Consistency
from new_services.search import manage as search
from tests.gateway.rollout.test_watermark import applied
from tests.support import ROOT
from tests.support.harness import RawResponse, raw_request, serve
from tests.support.shared_store import KEY, SECRET, Clock, bearer, redis_store

pytestmark = pytest.mark.anyio
POLICIES = ROOT / "policies"
DEADLINE = 10.0


@dataclass
class Service:
    """A stand-in upstream: answers reads; answers writes with `status` and, when set, the
    commit position header the monolith sends."""

    name: str
    url: str = ""
    position: str | None = None
    status: int = 201
    writes: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        status = 200
        if scope["method"] not in ("GET", "HEAD"):
            self.writes += 1
            status = self.status
            if self.position is not None:
                headers.append((b"x-strangler-commit-position", self.position.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b'{"served_by": "%s"}' % self.name.encode()}
        )


@contextlib.asynccontextmanager
async def service(name: str) -> AsyncIterator[Service]:
    upstream = Service(name)
    async with serve(upstream) as url:
        upstream.url = url
        yield upstream


@dataclass
class Stack:
    legacy: Service
    search: Service
    routes: Path
    search_db: str
    apps: list[GatewayApp] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def configure(self, section: str, extra: str = "", authz: str = "none") -> None:
        self.routes.write_text(
            f"""\
upstreams:
  legacy: {{url: "{self.legacy.url}", timeout: 5s}}
  search: {{url: "{self.search.url}", timeout: 5s}}
default: legacy
trusted_proxies: [127.0.0.1]     # the tests speak for clients behind a proxy
auth:
  default: optional
  keys: [{{id: k, algorithm: HS256, secret: "{SECRET}", dev: true}}]
authz: {authz}
shadow_store: {{url: "sqlite:///{self.routes.parent / "shadow.db"}"}}
{extra}read_your_writes:
{section}
routes:
  - name: search
    path: /search
    upstream: search
  - name: products
    path: /products
    upstream: legacy
"""
        )

    @contextlib.asynccontextmanager
    async def gateway(self, clock: Clock | None = None) -> AsyncIterator[GatewayApp]:
        app = GatewayApp(self.routes, reload_interval=0)
        if clock is not None:
            app.gateway.consistency = Consistency(app.limits, clock)
        async with serve(app, lifespan="on") as url:
            self.apps.append(app)
            self.ports.append(int(url.rsplit(":", 1)[1]))
            yield app

    async def send(self, method: str, path: str, *headers: str, gateway: int = 0) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", "Host: shop.test", "Connection: close", *headers]
        if method in ("POST", "PUT"):
            lines.append("Content-Length: 2")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return await raw_request(
            self.ports[gateway], head, b"{}" if method in ("POST", "PUT") else b""
        )

    async def reader(self, *headers: str, gateway: int = 0) -> str:
        """Who answered GET /search."""
        response = await self.send("GET", "/search?q=lamp", *headers, gateway=gateway)
        assert response.status == 200, response.body
        who = response.header("x-strangler-upstream")
        assert who is not None and response.json()["served_by"] == who
        return who


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    search_db = f"sqlite:///{tmp_path / 'search.db'}"
    search.migrate(search_db)  # the new service's database, with the bridge's cdc_positions
    async with service("legacy") as legacy, service("search") as new:
        yield Stack(legacy, new, tmp_path / "routes.yaml", search_db)


def position_mode(stack: Stack, tables: str = "all", window: str = "60s") -> str:
    return (
        f"  mode: position\n  window: {window}\n  poll: 20ms\n  upstreams:\n"
        f"    search: {{tables: {tables}, positions: '{stack.search_db}'}}"
    )


# Made when the module loads, so they must outlive a whole suite on a slow machine.
ALICE, BOB = bearer("alice", ttl=86400), bearer("bob", ttl=86400)


async def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition, with a deadline


def watermark_sees(app: GatewayApp, table: str, commit: int) -> Callable[[], Any]:
    async def seen() -> bool:
        marks = list(app.gateway.consistency.watermarks.values())
        found = marks[0].applied() if marks else None
        return found is not None and table in found and found[table].commit_lsn == commit

    return seen


async def test_position_mode_pins_the_writer_until_the_bridge_applied_the_write(
    stack: Stack,
) -> None:
    stack.configure(position_mode(stack))
    applied(stack.search_db, "legacy.public.products", 9)
    stack.legacy.position = "public.products=10"
    async with stack.gateway() as app:
        assert await stack.reader(ALICE) == "search"
        wrote = await stack.send("POST", "/products", ALICE)
        assert wrote.status == 201 and wrote.header("x-strangler-upstream") == "legacy"
        assert wrote.header("x-strangler-commit-position") is None  # internal: removed
        assert await stack.reader(ALICE) == "legacy"
        assert await stack.reader(BOB) == "search"  # other users are not pinned
        await until(watermark_sees(app, "public.products", 9), "the positions read")
        assert await stack.reader(ALICE) == "legacy"  # 9 < 10: not applied yet
        applied(stack.search_db, "legacy.public.products", 10)
        await until(watermark_sees(app, "public.products", 10), "the bridge's new position")
        assert await stack.reader(ALICE) == "search"
        stats = app.gateway.consistency.stats
        assert stats.pins == {"position": 1}
        assert stats.pinned["search"] == 2 and stats.released["search"] == 1
        assert stack.search.writes == 0  # writes were never sent to the new service


async def test_a_later_write_raises_the_position_the_reads_wait_for(stack: Stack) -> None:
    stack.configure(position_mode(stack))
    applied(stack.search_db, "legacy.public.products", 10)
    async with stack.gateway() as app:
        stack.legacy.position = "public.products=11"
        await stack.send("POST", "/products", ALICE)
        stack.legacy.position = "public.products=12, public.categories=3"
        await stack.send("PUT", "/products", ALICE)
        applied(stack.search_db, "legacy.public.products", 11)
        await until(watermark_sees(app, "public.products", 11), "11 applied")
        assert await stack.reader(ALICE) == "legacy"
        applied(stack.search_db, "legacy.public.products", 12)
        await until(watermark_sees(app, "public.products", 12), "12 applied")
        assert await stack.reader(ALICE) == "legacy"  # categories 3: not applied yet
        applied(stack.search_db, "legacy.public.categories", 3)
        await until(lambda: _one(app, lambda a: "public.categories" in a), "the categories applied")
        assert await stack.reader(ALICE) == "search"


async def _one(app: GatewayApp, test: Callable[[Any], bool]) -> bool:
    found = next(iter(app.gateway.consistency.watermarks.values())).applied()
    return found is not None and test(found)


async def test_tables_the_upstream_is_not_fed_from_do_not_pin_it(stack: Stack) -> None:
    stack.configure(position_mode(stack, tables="[public.products, public.categories]"))
    async with stack.gateway():
        stack.legacy.position = "public.orders=50, public.order_items=50"
        await stack.send("POST", "/products", ALICE)
        assert await stack.reader(ALICE) == "search"
        stack.legacy.position = "public.orders=51, public.products=51"
        await stack.send("POST", "/products", ALICE)
        assert await stack.reader(ALICE) == "legacy"


async def test_without_fresh_positions_a_pin_lasts_its_window(stack: Stack, tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'not-there.db'}"
    stack.configure(
        f"  mode: position\n  window: 5s\n  upstreams:\n    search: {{positions: '{missing}'}}"
    )
    clock = Clock()
    stack.legacy.position = "public.products=10"
    async with stack.gateway(clock) as app:
        await stack.send("POST", "/products", ALICE)
        marks = app.gateway.consistency.watermarks
        await until(lambda: _async(next(iter(marks.values())).stats.failures >= 2), "failed reads")
        assert await stack.reader(ALICE) == "legacy"
        clock.now += 4.9
        assert await stack.reader(ALICE) == "legacy"
        clock.now += 0.1  # the window's upper bound
        assert await stack.reader(ALICE) == "search"
        assert app.gateway.consistency.stats.stale == 2


async def _async(value: bool) -> bool:
    return value


async def test_a_write_without_a_readable_position_pins_for_the_window(stack: Stack) -> None:
    stack.configure(position_mode(stack, window="5s"))
    applied(stack.search_db, "legacy.public.products", 10**6)  # far ahead of anything
    clock = Clock()
    async with stack.gateway(clock) as app:
        stack.legacy.position = None  # a monolith that does not say
        await stack.send("POST", "/products", ALICE)
        stack.legacy.position = "products=9; drop table"  # or says something unreadable
        await stack.send("POST", "/products", BOB)
        assert await stack.reader(ALICE) == "legacy"  # positions do not matter: none is known
        assert await stack.reader(BOB) == "legacy"
        clock.now += 5
        assert await stack.reader(ALICE) == "search"
        stats = app.gateway.consistency.stats
        assert stats.pins == {"unknown": 2} and stats.bad_headers == 1


async def test_a_reload_moves_the_positions_reader(stack: Stack, tmp_path: Path) -> None:
    stack.configure(position_mode(stack))
    stack.legacy.position = "public.products=10"
    async with stack.gateway() as app:
        await stack.send("POST", "/products", ALICE)
        (old,) = app.gateway.consistency.watermarks.values()
        assert old.polling
        moved = f"sqlite:///{tmp_path / 'moved.db'}"  # the search database moved
        search.migrate(moved)
        applied(moved, "legacy.public.products", 10)
        stack.search_db = moved
        stack.configure(position_mode(stack))
        app.watcher.reload()
        assert await stack.reader(ALICE) == "legacy"  # served by the new table: not read yet
        assert list(app.gateway.consistency.watermarks) == [(moved, "legacy")]
        await until(lambda: _async(not old.polling), "the old reader to close")
        await until(watermark_sees(app, "public.products", 10), "the moved positions read")
        assert await stack.reader(ALICE) == "search"


async def test_window_mode_pins_for_the_window(stack: Stack) -> None:
    stack.configure("  window: 2s\n  upstreams: {search: {tables: all}}")
    clock = Clock()
    stack.legacy.position = "public.products=10"  # window mode does not read it
    async with stack.gateway(clock) as app:
        wrote = await stack.send("DELETE", "/products", ALICE)
        assert wrote.header("x-strangler-commit-position") is None
        assert await stack.reader(ALICE) == "legacy"
        clock.now += 1.9
        assert await stack.reader(ALICE) == "legacy"
        assert await stack.reader(BOB) == "search"
        clock.now += 0.1
        assert await stack.reader(ALICE) == "search"
        assert app.gateway.consistency.stats.pins == {"window": 1}
        assert not app.gateway.consistency.watermarks  # window mode reads no positions


async def test_refused_writes_do_not_pin_and_failed_ones_do(stack: Stack) -> None:
    stack.configure("  upstreams: {search: {}}")
    async with stack.gateway():
        stack.legacy.status = 422  # the monolith refused: nothing was written
        assert (await stack.send("POST", "/products", ALICE)).status == 422
        assert await stack.reader(ALICE) == "search"
        stack.legacy.status = 500  # it may have written before failing
        assert (await stack.send("POST", "/products", ALICE)).status == 500
        assert await stack.reader(ALICE) == "legacy"


async def test_a_write_the_gateway_could_not_deliver_pins(stack: Stack) -> None:
    """502: the monolith may have done the write before the connection broke."""
    stack.configure("  upstreams: {search: {}}")
    stack.routes.write_text(
        stack.routes.read_text().replace(stack.legacy.url, "http://127.0.0.1:9")
    )
    async with stack.gateway() as app:
        assert (await stack.send("POST", "/products", ALICE)).status == 502
        assert app.gateway.consistency.stats.pins == {"window": 1}
        assert (await stack.send("GET", "/search", ALICE)).status == 502  # to the monolith
        assert await stack.reader(BOB) == "search"


async def test_anonymous_writers_are_pinned_by_their_sticky_key(stack: Stack) -> None:
    stack.configure("  upstreams: {search: {}}")
    cookie = "Cookie: strangler_sticky=" + "0123456789abcdef" * 2
    other = "Cookie: strangler_sticky=" + "fedcba9876543210" * 2
    async with stack.gateway():
        await stack.send("POST", "/products", cookie)
        assert await stack.reader(cookie) == "legacy"
        assert await stack.reader(other) == "search"
        # Without the cookie the key is a MAC of the address, as the cookie would say.
        await stack.send("POST", "/products", "X-Forwarded-For: 203.0.113.7")
        assert await stack.reader("X-Forwarded-For: 203.0.113.7") == "legacy"
        assert await stack.reader("X-Forwarded-For: 203.0.113.8") == "search"
        assert sticky.cookie_value([(b"cookie", cookie[8:].encode())], b"strangler_sticky=")


async def test_a_tester_who_chose_the_upstream_gets_it(stack: Stack) -> None:
    stack.configure(
        "  upstreams: {search: {}}", authz=f"{{engine: embedded, policies: '{POLICIES}'}}"
    )
    tester = f"Authorization: Bearer {mint(KEY, 'tess', ['migration-tester', 'admin'], 600)}"
    async with stack.gateway():
        assert (await stack.send("POST", "/products", tester)).status == 201
        assert await stack.reader(tester) == "legacy"
        assert await stack.reader(tester, "X-Strangler-Target: search") == "search"


async def test_replicas_share_pins_in_redis_and_pin_when_it_fails(
    stack: Stack, own_redis: Any
) -> None:
    store = (
        f'store: {{backend: redis, url: "{own_redis.url}", timeout: 200ms, cooldown: 5s,'
        " failure: {revocation: open}}\n"  # tokens pass unchecked: this test is about pins
    )
    stack.configure("  upstreams: {search: {}}", extra=store)
    async with stack.gateway() as first, stack.gateway():
        await stack.send("POST", "/products", ALICE, gateway=0)
        assert await stack.reader(ALICE, gateway=1) == "legacy"  # the other replica knows
        assert await stack.reader(BOB, gateway=1) == "search"
        own_redis.kill()
        # The store is down: nobody can be told apart, so everyone reads from the monolith.
        assert await stack.reader(BOB, gateway=1) == "legacy"
        await stack.send("POST", "/products", BOB, gateway=0)  # its pin is lost (counted)
        failures = first.gateway.consistency.stats.store_failures
        assert failures["write"] == 1
        assert first.limits.stats.health.failures["read_your_writes"] >= 1


async def test_redis_pins_survive_a_gateway_restart(
    stack: Stack, redis_prefix: tuple[str, str]
) -> None:
    url, prefix = redis_prefix
    stack.configure(
        "  upstreams: {search: {}}",
        extra=f'store: {{backend: redis, url: "{url}", prefix: "{prefix}"}}\n',
    )
    async with stack.gateway():
        await stack.send("POST", "/products", ALICE)
    async with redis_store(url, prefix) as store:
        assert await store.client.exists(store.key("ryw", "sub:alice"))
    async with stack.gateway():
        assert await stack.reader(ALICE, gateway=1) == "legacy"


async def test_metrics_show_the_pins(stack: Stack) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    stack.configure(position_mode(stack), extra="metrics: {access: open}\n")
    stack.legacy.position = "public.products=10"
    async with stack.gateway():
        await stack.send("POST", "/products", ALICE)
        await stack.reader(ALICE)
        response = await stack.send("GET", "/metrics")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }
    assert samples[("strangler_ryw_pins_total", (("kind", "position"),))] == 1
    key = ("strangler_ryw_reads_total", (("outcome", "pinned"), ("route", "search")))
    assert samples[key] == 1
