"""Read-your-writes end to end, every piece real and on loopback: the monolith on SQLite with
the dev capture, librdkafka's mock cluster and the CDC bridge (`strangler cdc run
--embedded`, one process), the search service, and the gateway with /search split 50/50.

A user writes a product through the gateway and searches at once: the monolith answers,
with the product, while the bridge has not applied the write; the new service answers once
it has. The bridge is made to lag for seconds by stopping its process (SIGSTOP): in
position mode the pin holds for the whole lag and ends within two position reads of the
bridge catching up; in window mode it ends with the window, lag or not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bench.process import free_port
from common import positions
from gateway.app import GatewayApp
from gateway.config.split import Split
from gateway.identity.tokens import mint
from legacy_monolith import manage as monolith
from new_services.search import manage as search
from tests.support import ROOT
from tests.support.harness import RawResponse, raw_request, serve_gateway
from tests.support.shared_store import KEY, SECRET

pytestmark = pytest.mark.anyio
POLICIES = ROOT / "policies"
PRODUCTS = 30
DEADLINE = 60.0
LAG_READS = 40  # position reads the gateway makes while the bridge is stopped (2 s at 50 ms)


def _wait(condition: Callable[[], bool], what: str, seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.05)  # polling a condition, with a deadline


def _answers(port: int) -> bool:
    try:
        return (
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).status_code
            == 200
        )
    except httpx.TransportError:
        return False


def _count(path: Path, query: str) -> int | None:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute(query).fetchone()[0])
    except sqlite3.Error:
        return None


@dataclass
class Shop:
    """The processes, their databases, and the stack's users."""

    work: Path
    legacy_db: Path
    search_db: Path
    legacy_port: int
    search_port: int
    bridge: subprocess.Popen[bytes]

    @property
    def search_url(self) -> str:
        return f"sqlite:///{self.search_db}"

    def last_change(self) -> int:
        """The dev capture's position of the newest change (what the monolith reported)."""
        seq = _count(self.legacy_db, "SELECT seq FROM sqlite_sequence WHERE name = 'cdc_changes'")
        assert seq is not None
        return seq

    def applied(self, position: int) -> bool:
        engine = sa.create_engine(self.search_url)
        try:
            done = positions.read(engine, "legacy").get("public.products")
        finally:
            engine.dispose()
        return done is not None and done.covers(position)

    @contextlib.contextmanager
    def bridge_stopped(self) -> Iterator[None]:
        """The bridge lags: its process (relay, broker and consumer) is frozen."""
        os.kill(self.bridge.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.bridge.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    work = tmp_path_factory.mktemp("read-your-writes")
    legacy_db, search_db = work / "legacy.db", work / "search.db"
    monolith.migrate(f"sqlite:///{legacy_db}")
    monolith.seed(f"sqlite:///{legacy_db}", products=PRODUCTS)
    search.migrate(f"sqlite:///{search_db}")
    cli = [sys.executable, "-m", "cli"]
    children: list[subprocess.Popen[bytes]] = []
    logs = contextlib.ExitStack()

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = logs.enter_context((work / f"{name}.log").open("wb"))
        child = subprocess.Popen([*cli, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=work)
        children.append(child)
        return child

    legacy_port, search_port = free_port(), free_port()
    try:
        bridge = start(
            "cdc",
            *("cdc", "run", "--embedded", "--status-file", str(work / "cdc-status.json")),
            *("--source-database-url", f"sqlite:///{legacy_db}"),
            *("--database-url", f"sqlite:///{search_db}"),
        )
        start("legacy", "monolith", "serve", "--database-url", f"sqlite:///{legacy_db}",
              "--port", str(legacy_port))  # fmt: skip
        start("search", "search", "serve", "--database-url", f"sqlite:///{search_db}",
              "--port", str(search_port))  # fmt: skip
        documents = "SELECT count(*) FROM search_documents"
        _wait(lambda: _count(search_db, documents) == PRODUCTS, "the bridge's snapshot")
        _wait(lambda: _answers(legacy_port) and _answers(search_port), "the services")
        yield Shop(work, legacy_db, search_db, legacy_port, search_port, bridge)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        logs.close()


SPLIT = Split.of({"legacy": 50, "search": 50}, "legacy", b"search")


def on_search(prefix: str) -> str:
    """A user name the 50/50 split sends to the new service."""
    return next(
        f"{prefix}-{n}" for n in range(1000) if SPLIT.pick(f"sub:{prefix}-{n}".encode()) == "search"
    )


WRITER, OTHER = on_search("writer"), on_search("reader")


@dataclass
class Client:
    port: int
    app: GatewayApp

    async def send(self, method: str, path: str, sub: str, body: Any = None) -> RawResponse:
        roles = ["admin"] if sub == WRITER else []
        data = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: shop.test",
            "Connection: close",
            f"Authorization: Bearer {mint(KEY, sub, roles, 600)}",
        ]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        return await raw_request(self.port, ("\r\n".join(lines) + "\r\n\r\n").encode(), data)

    async def search(self, sub: str, word: str) -> tuple[str, list[str]]:
        """(who answered, the names found) for /search?q=WORD."""
        response = await self.send("GET", f"/search?q={word}", sub)
        assert response.status == 200, response.body
        who = response.header("x-strangler-upstream")
        assert who is not None
        return who, [result["name"] for result in response.json()["results"]]

    async def create(self, name: str) -> None:
        product = {"name": name, "price": "9.99", "category": "lighting", "stock": 1}
        response = await self.send("POST", "/products", WRITER, product)
        assert response.status == 201, response.body
        assert response.header("x-strangler-upstream") == "legacy"
        assert response.header("x-strangler-commit-position") is None  # internal

    def polls(self) -> int:
        return sum(w.stats.polls for w in self.app.gateway.consistency.watermarks.values())

    async def until_polled(self, polls: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while self.polls() < polls:
            assert time.monotonic() < deadline, f"the gateway read positions {self.polls()} times"
            await asyncio.sleep(0.01)  # polling a condition, with a deadline


@contextlib.asynccontextmanager
async def gateway(shop: Shop, section: str) -> AsyncIterator[Client]:
    routes = shop.work / f"routes-{time.monotonic_ns()}.yaml"
    routes.write_text(
        f"""\
upstreams:
  legacy: {{url: "http://127.0.0.1:{shop.legacy_port}", timeout: 10s}}
  search: {{url: "http://127.0.0.1:{shop.search_port}", timeout: 10s}}
default: legacy
auth:
  default: optional
  keys: [{{id: k, algorithm: HS256, secret: "{SECRET}", dev: true}}]
authz: {{engine: embedded, policies: "{POLICIES}"}}
shadow_store: {{url: "sqlite:///{shop.work / "shadow.db"}"}}
read_your_writes:
{section}
routes:
  - name: search
    path: /search
    methods: [GET]
    upstream: {{legacy: 50, search: 50}}
  - name: products
    path: /products
    upstream: legacy
"""
    )
    async with serve_gateway(routes) as served:
        yield Client(served.port, served.app)


async def test_position_mode_holds_the_pin_for_the_whole_lag(shop: Shop) -> None:
    section = (
        "  mode: position\n  window: 60s\n  poll: 50ms\n"
        f"  upstreams: {{search: {{tables: all, positions: '{shop.search_url}'}}}}"
    )
    async with gateway(shop, section) as client:
        word, name = "Pinlamp", "Pinlamp Desk Light"
        assert await client.search(WRITER, word) == ("search", [])
        with shop.bridge_stopped():
            await client.create(name)
            written = shop.last_change()
            # At once: the monolith answers, and has the product.
            assert await client.search(WRITER, word) == ("legacy", [name])
            # Others are not pinned: the new service answers them, without it yet.
            assert await client.search(OTHER, word) == ("search", [])
            # Seconds of lag: the gateway keeps reading positions, the pin keeps holding.
            await client.until_polled(client.polls() + LAG_READS)
            assert not shop.applied(written)
            assert await client.search(WRITER, word) == ("legacy", [name])
        # The bridge catches up; within two more position reads the pin is gone.
        await asyncio.to_thread(_wait, lambda: shop.applied(written), "the bridge to catch up")
        await client.until_polled(client.polls() + 2)
        assert await client.search(WRITER, word) == ("search", [name])
        assert await client.search(OTHER, word) == ("search", [name])
        stats = client.app.gateway.consistency.stats
        assert stats.pins == {"position": 1}
        assert stats.pinned["search"] == 2 and stats.released["search"] == 1


async def test_window_mode_ends_the_pin_with_the_window_lag_or_not(shop: Shop) -> None:
    section = "  mode: window\n  window: 1s\n  upstreams: {search: {tables: all}}"
    async with gateway(shop, section) as client:
        word, name = "Winlamp", "Winlamp Floor Light"
        with shop.bridge_stopped():
            await client.create(name)
            written = shop.last_change()
            assert await client.search(WRITER, word) == ("legacy", [name])
            deadline = time.monotonic() + DEADLINE
            while (found := await client.search(WRITER, word))[0] == "legacy":
                assert time.monotonic() < deadline, "the window never ended"
                await asyncio.sleep(0.05)  # polling the endpoint under test, with a deadline
            # The window is over but the bridge is still stopped: the new service answers
            # without the write. A window shorter than the lag reads stale data.
            assert found == ("search", [])
            assert not shop.applied(written)
        await asyncio.to_thread(_wait, lambda: shop.applied(written), "the bridge to catch up")
        assert await client.search(WRITER, word) == ("search", [name])
        assert client.app.gateway.consistency.stats.pins == {"window": 1}
