"""Limits.admit on its own: it returns what the pipeline does next, and calls nothing back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.base.errors import BadRequest, IdempotencyConflict
from gateway.base.types import Message
from gateway.config.table import parse
from gateway.limits.gate import Limits
from gateway.request.body import ClientGone
from gateway.request.context import RequestContext

pytestmark = pytest.mark.anyio

TABLE = parse(
    b'upstreams:\n  b: {url: "http://127.0.0.1:9"}\nauth: {default: none}\nauthz: none\n'
    b"routes:\n  - {name: orders, path: /orders, upstream: b, idempotency: {required: true}}\n"
)


def context(*headers: tuple[bytes, bytes]) -> RequestContext:
    scope = {"method": "POST", "headers": [*headers], "client": ("192.0.2.1", 1)}
    return RequestContext(
        scope, TABLE, "r", time.perf_counter(), path="/orders", route=TABLE.routes[0]
    )


KEY = (b"idempotency-key", b"k-1")
BODY = (b"content-length", b"2")


def body(*messages: Message) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


async def sink(message: Message) -> None:
    return None


async def test_a_claimed_key_is_forwarded_with_a_capture_and_freed_unless_kept() -> None:
    limits = Limits(TABLE.store)
    first = await limits.admit(
        context(KEY, BODY), body({"type": "http.request", "body": b"{}"}), sink
    )
    assert first.stored is None and first.claim is not None
    assert (await first.receive())["body"] == b"{}"  # the body read for the fingerprint, again
    with pytest.raises(IdempotencyConflict):  # the first is still in flight
        await limits.admit(context(KEY, BODY), body({"type": "http.request", "body": b"{}"}), sink)
    await first.finish()  # nothing was kept (no answer went out): the key is free again
    again = await limits.admit(
        context(KEY, BODY), body({"type": "http.request", "body": b"{}"}), sink
    )
    assert again.claim is not None
    await again.send({"type": "http.response.start", "status": 201, "headers": []})
    await again.send({"type": "http.response.body", "body": b"made"})
    await again.finish()
    replayed = await limits.admit(
        context(KEY, BODY), body({"type": "http.request", "body": b"{}"}), sink
    )
    assert replayed.stored is not None and replayed.claim is None
    assert (replayed.stored.status, replayed.stored.body) == (201, b"made")
    stats = limits.stats.snapshot()["idempotency"]
    assert stats == {
        "orders": {"claimed": 2, "conflict": 1, "released": 1, "kept": 1, "replayed": 1}
    }
    await limits.close()


async def test_no_key_where_one_is_required_and_a_client_gone_are_raised() -> None:
    limits = Limits(TABLE.store)
    with pytest.raises(BadRequest):
        await limits.admit(context(BODY), body(), sink)
    with pytest.raises(ClientGone):  # before any claim: a retry starts afresh
        await limits.admit(context(KEY, BODY), body({"type": "http.disconnect"}), sink)
    assert "claimed" not in limits.stats.snapshot().get("idempotency", {}).get("orders", {})
    await limits.close()
