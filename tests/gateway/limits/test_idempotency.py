"""Idempotency keys: one contract suite run on the in-memory and the Redis adapter (claim,
complete, release, expiry), and the gateway end to end on both stores (replay, conflict,
mismatch, per-user scope, what is not kept, a client that leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from gateway.limits.idempotency import (
    Held,
    IdempotencyStore,
    MemoryIdempotency,
    RedisIdempotency,
    StoredResponse,
    fingerprint,
    request_key,
)
from tests.support.harness import Gateway, RawResponse, raw_request, serve, serve_gateway
from tests.support.shared_store import Clock, after, bearer, redis_store, write_routes

pytestmark = pytest.mark.anyio


@dataclass
class Adapter:
    store: IdempotencyStore
    clock: Clock | None  # None: Redis, whose own expiry counts


@pytest.fixture(params=["memory", "redis"])
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
    if request.param == "memory":
        clock = Clock()
        yield Adapter(MemoryIdempotency(clock), clock)
        return
    async with redis_store(*request.getfixturevalue("redis_prefix")) as store:
        yield Adapter(RedisIdempotency(store), None)


ANSWER = StoredResponse(201, [(b"content-type", b"application/json"), (b"x-a", b"1")], b'{"id": 7}')


# -- the contract: both adapters ----------------------------------------------------------


async def test_one_claim_wins_and_the_answer_is_kept(adapter: Adapter) -> None:
    store = adapter.store
    assert await store.claim("k", "fp1", "t1", lock=60) is None
    assert await store.claim("k", "fp1", "t2", lock=60) == Held("fp1", None)  # in progress
    assert await store.claim("k", "fp2", "t2", lock=60) == Held("fp1", None)
    assert not await store.complete("k", "t2", "fp1", ANSWER, ttl=60)  # not t2's claim
    assert await store.complete("k", "t1", "fp1", ANSWER, ttl=60)
    assert await store.claim("k", "fp1", "t3", lock=60) == Held("fp1", ANSWER)
    assert await store.claim("other", "fp1", "t3", lock=60) is None  # keys are separate


async def test_answers_round_trip_byte_for_byte(adapter: Adapter) -> None:
    odd = StoredResponse(200, [(b"x-latin", "caf\xe9".encode("latin-1"))], b"\x00|\n\xff|d|")
    headless = StoredResponse(200, [(b"content-type", b"text/plain")], None)  # larger than the cap
    for key, answer in (("odd", odd), ("big", headless)):
        assert await adapter.store.claim(key, "f", "t", lock=60) is None
        assert await adapter.store.complete(key, "t", "f", answer, ttl=60)
        assert await adapter.store.claim(key, "f", "u", lock=60) == Held("f", answer)


async def test_release_frees_the_key_for_its_owner_only(adapter: Adapter) -> None:
    store = adapter.store
    assert await store.claim("k", "f", "owner", lock=60) is None
    await store.release("k", "someone-else")
    assert await store.claim("k", "f", "x", lock=60) == Held("f", None)
    await store.release("k", "owner")
    assert await store.claim("k", "f", "next", lock=60) is None


async def test_a_claim_expires_after_its_lock(adapter: Adapter) -> None:
    store = adapter.store
    assert await store.claim("k", "f", "slow", lock=0.2) is None
    assert await store.claim("k", "f", "x", lock=60) == Held("f", None)

    async def claimed() -> bool:
        return await store.claim("k", "f", "late", lock=60) is None

    assert await after(adapter.clock, 0.2, claimed)
    # the slow first request finishes after its lock: it must not overwrite the new claim
    assert not await store.complete("k", "slow", "f", ANSWER, ttl=60)
    assert await store.claim("k", "f", "y", lock=60) == Held("f", None)


async def test_a_kept_answer_expires_after_its_ttl(adapter: Adapter) -> None:
    store = adapter.store
    assert await store.claim("k", "f", "t", lock=60) is None
    assert await store.complete("k", "t", "f", ANSWER, ttl=0.2)
    assert await store.claim("k", "f", "u", lock=60) == Held("f", ANSWER)

    async def gone() -> bool:
        return await store.claim("k", "f", "v", lock=60) is None

    assert await after(adapter.clock, 0.2, gone)


def test_keys_and_fingerprints() -> None:
    assert request_key([]) is None
    assert request_key([(b"idempotency-key", b'"8e03978e-40d5"')]) == "8e03978e-40d5"
    assert request_key([(b"idempotency-key", b"plain-token")]) == "plain-token"
    for bad in (b"", b'""', b"x" * 256, "caf\xe9".encode("latin-1")):
        with pytest.raises(Exception, match="Idempotency-Key"):
            request_key([(b"idempotency-key", bad)])
    with pytest.raises(Exception, match="more than one"):
        request_key([(b"idempotency-key", b"a"), (b"idempotency-key", b"a")])
    base = fingerprint("POST", b"/orders", b"{}")
    assert base == fingerprint("POST", b"/orders", b"{}")
    assert base != fingerprint("PUT", b"/orders", b"{}")
    assert base != fingerprint("POST", b"/orders?x=1", b"{}")
    assert base != fingerprint("POST", b"/orders", b"{ }")
    assert fingerprint("POST", b"/a", b"b") != fingerprint("POST", b"/ab", b"")  # framed


# -- the gateway, on both stores ----------------------------------------------------------


@dataclass
class Orders:
    """The upstream: numbers every request it runs; ?status=, ?size= and /hold shape it."""

    url: str = ""
    runs: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.runs += 1
        number = self.runs
        if scope["path"].endswith("/hold"):
            self.entered.set()
            await self.release.wait()
        query = parse_qs(scope["query_string"].decode())
        status = int(query.get("status", ["201"])[0])
        size = int(query.get("size", ["0"])[0])
        payload = b"x" * size if size else json.dumps({"order": number, "body": body.decode()})
        content = payload.encode() if isinstance(payload, str) else payload
        headers = [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def routes_file(tmp_path: Path, upstream: str, store: str, keys: str = "{}") -> Path:
    return write_routes(
        tmp_path / "routes.yaml",
        upstream,
        f"{store}routes:\n"
        f"  - {{name: orders, path: /orders, upstream: legacy, idempotency: {keys}}}\n"
        "  - name: strict\n    path: /strict\n    upstream: legacy\n    max_body: 1KiB\n"
        "    idempotency: {required: true, methods: [POST]}\n",
    )


@pytest.fixture(params=["memory", "redis"])
def store_section(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return ""
    url, prefix = request.getfixturevalue("redis_prefix")
    return f'store: {{backend: redis, url: "{url}", prefix: "{prefix}", timeout: 2s}}\n'


@contextlib.asynccontextmanager
async def shop(
    tmp_path: Path, store: str, keys: str = "{}"
) -> AsyncIterator[tuple[Orders, Gateway]]:
    orders = Orders()
    async with serve(orders) as url:
        orders.url = url
        async with serve_gateway(routes_file(tmp_path, url, store, keys)) as gw:
            yield orders, gw


def post(path: str, body: bytes = b"{}", *extra: str, method: str = "POST") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: gateway.test",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send(gw: Gateway, head: bytes) -> RawResponse:
    return await raw_request(gw.port, head)


async def test_a_repeat_gets_the_first_answer_replayed(tmp_path: Path, store_section: str) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        first = await send(gw, post("/orders", b'{"item": 1}', "Idempotency-Key: k-1"))
        again = await send(gw, post("/orders", b'{"item": 1}', 'Idempotency-Key: "k-1"'))
        assert (first.status, first.json()["order"]) == (201, 1)
        assert (again.status, again.body) == (201, first.body)
        assert again.header("idempotent-replayed") == "true"
        assert first.header("idempotent-replayed") is None
        assert again.header("x-strangler-upstream") == "legacy"
        assert again.header("x-request-id") != first.header("x-request-id")
        assert orders.runs == 1
        other = await send(gw, post("/orders", b'{"item": 1}', "Idempotency-Key: k-2"))
        assert other.json()["order"] == 2
        stats = gw.app.limits.stats.snapshot()["idempotency"]
        assert stats == {"orders": {"claimed": 2, "kept": 2, "replayed": 1}}


async def test_same_key_for_another_request_is_422(tmp_path: Path, store_section: str) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        assert (await send(gw, post("/orders", b"{}", "Idempotency-Key: k"))).status == 201
        for changed in (
            post("/orders", b'{"x": 1}', "Idempotency-Key: k"),
            post("/orders/2", b"{}", "Idempotency-Key: k"),
            post("/orders?dry=1", b"{}", "Idempotency-Key: k"),
            post("/orders", b"{}", "Idempotency-Key: k", method="PATCH"),
        ):
            answer = await send(gw, changed)
            assert (answer.status, answer.json()["error"]) == (422, "idempotency_key_reused")
        assert orders.runs == 1


async def test_keys_are_scoped_per_user(tmp_path: Path, store_section: str) -> None:
    alice, bob = bearer("alice"), bearer("bob")
    async with shop(tmp_path, store_section) as (orders, gw):
        a = await send(gw, post("/orders", b"{}", "Idempotency-Key: same", alice))
        b = await send(gw, post("/orders", b"{}", "Idempotency-Key: same", bob))
        a2 = await send(gw, post("/orders", b"{}", "Idempotency-Key: same", alice))
    assert (a.json()["order"], b.json()["order"], a2.json()["order"]) == (1, 2, 1)
    assert orders.runs == 2


async def test_a_concurrent_duplicate_is_409_then_replayed(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        first = asyncio.create_task(send(gw, post("/orders/hold", b"{}", "Idempotency-Key: c")))
        await orders.entered.wait()
        duplicate = await send(gw, post("/orders/hold", b"{}", "Idempotency-Key: c"))
        assert (duplicate.status, duplicate.json()["error"]) == (409, "idempotency_conflict")
        orders.release.set()
        assert (await first).status == 201
        replayed = await send(gw, post("/orders/hold", b"{}", "Idempotency-Key: c"))
        assert replayed.header("idempotent-replayed") == "true"
        assert orders.runs == 1


async def test_server_errors_are_not_kept_so_a_retry_runs_again(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        for _ in range(2):
            failed = await send(gw, post("/orders?status=503", b"{}", "Idempotency-Key: e"))
            assert failed.status == 503 and failed.header("idempotent-replayed") is None
        assert orders.runs == 2
        kept = await send(gw, post("/orders?status=400", b"{}", "Idempotency-Key: e4"))
        again = await send(gw, post("/orders?status=400", b"{}", "Idempotency-Key: e4"))
        assert (kept.status, again.status, again.header("idempotent-replayed")) == (
            400,
            400,
            "true",
        )
        assert orders.runs == 3  # a client error is the upstream's answer: kept


async def test_an_answer_over_the_cap_is_not_kept_and_not_run_twice(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section, "{max_response: 1KiB}") as (orders, gw):
        big = await send(gw, post("/orders?size=4096", b"{}", "Idempotency-Key: big"))
        assert big.status == 201 and len(big.body) == 4096  # the client got all of it
        again = await send(gw, post("/orders?size=4096", b"{}", "Idempotency-Key: big"))
        assert again.status == 409
        assert again.json()["error"] == "idempotency_response_not_kept"
        assert "answered 201" in again.json()["detail"]
        assert orders.runs == 1


async def test_a_client_that_leaves_mid_request_finds_its_answer_kept(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(post("/orders/hold", b"{}", "Idempotency-Key: gone"))
        await writer.drain()
        await orders.entered.wait()
        writer.close()  # the client gives up while the upstream is still working
        await writer.wait_closed()
        orders.release.set()
        deadline = time.monotonic() + 5
        while True:  # the first request finishes on its own; poll until it has
            retry = await send(gw, post("/orders/hold", b"{}", "Idempotency-Key: gone"))
            if retry.status != 409 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert (retry.status, retry.header("idempotent-replayed")) == (201, "true")
        assert retry.json()["order"] == 1 and orders.runs == 1


async def test_without_a_key_requests_pass_unless_it_is_required(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        assert [(await send(gw, post("/orders"))).status for _ in range(2)] == [201, 201]
        get_twice = [
            (await send(gw, post("/orders", b"", "Idempotency-Key: g", method="GET"))).status
            for _ in range(2)
        ]
        assert get_twice == [201, 201]  # a safe method: the key is not the gateway's business
        assert orders.runs == 4
        missing = await send(gw, post("/strict"))
        assert (missing.status, missing.json()["error"]) == (400, "bad_request")
        too_long = await send(gw, post("/strict", b"{}", "Idempotency-Key: " + "k" * 300))
        assert too_long.status == 400
        assert orders.runs == 4


async def test_a_body_over_the_routes_max_body_is_413_and_claims_nothing(
    tmp_path: Path, store_section: str
) -> None:
    async with shop(tmp_path, store_section) as (orders, gw):
        chunked = (
            b"POST /strict HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Idempotency-Key: big\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n"
        )
        too_large = await send(gw, chunked)
        assert (too_large.status, too_large.json()["error"]) == (413, "body_too_large")
        assert orders.runs == 0
        fits = await send(gw, post("/strict", b"{}", "Idempotency-Key: big"))
        assert fits.status == 201 and orders.runs == 1  # the key was never taken
