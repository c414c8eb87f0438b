"""The request cycle (gateway/http/cycle.py): a head marked BODY_FOLLOWS and its body go out
in one write; an unmarked head goes out at once, alone; the framing is uvicorn's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, cast

import pytest
from uvicorn.protocols.http.flow_control import FlowControl

from gateway.base.types import BODY_FOLLOWS
from gateway.http.cycle import JsonCycle

pytestmark = pytest.mark.anyio

_START: Any = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"5")],
    BODY_FOLLOWS: True,
}
_BODY: Any = {"type": "http.response.body", "body": b"hello"}


class _Transport:
    """Records each write as the bytes that would go out in one system call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: Iterable[bytes]) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(transport: _Transport, method: str = "GET", keep_alive: bool = True) -> JsonCycle:
    real = cast(asyncio.Transport, transport)
    return JsonCycle(
        scope=cast(Any, {"method": method, "http_version": "1.1"}),
        transport=real,
        flow=FlowControl(real),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


async def test_a_head_and_its_body_are_one_write() -> None:
    transport = _Transport()
    cycle = _cycle(transport)
    await cycle.send(_START)
    assert transport.writes == []  # held for the body
    await cycle.send(_BODY)
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5" in head
    assert body == b"hello" and cycle.response_complete


async def test_an_unmarked_head_goes_out_at_once() -> None:
    transport = _Transport()
    cycle = _cycle(transport)
    unmarked: Any = {**_START, BODY_FOLLOWS: False}
    await cycle.send(unmarked)
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n")
    await cycle.send(_BODY)
    assert transport.writes[1:] == [b"hello"]


async def test_the_answer_to_head_and_a_closing_answer_keep_their_head() -> None:
    head_request = _Transport()
    cycle = _cycle(head_request, method="HEAD")
    await cycle.send(_START)
    await cycle.send({"type": "http.response.body", "body": b""})
    assert len(head_request.writes) == 1 and head_request.writes[0].endswith(b"\r\n\r\n")
    closing = _Transport()
    cycle = _cycle(closing, method="HEAD", keep_alive=False)
    await cycle.send(_START)
    await cycle.send({"type": "http.response.body", "body": b""})
    assert len(closing.writes) == 1 and closing.closed  # the head went out before the close


async def test_a_streamed_body_after_the_first_chunk_is_written_as_it_comes() -> None:
    transport = _Transport()
    cycle = _cycle(transport)
    start: Any = {"type": "http.response.start", "status": 200, "headers": [], BODY_FOLLOWS: True}
    await cycle.send(start)
    await cycle.send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"cd", "more_body": False})
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b"\r\n\r\n2\r\nab\r\n")
    assert transport.writes[1] == b"2\r\ncd\r\n0\r\n\r\n"


async def test_uvicorns_rules_for_what_is_sent() -> None:
    transport = _Transport()
    cycle = _cycle(transport, keep_alive=True)
    closing: Any = {**_START, "headers": [(b"Content-Length", b"5"), (b"Connection", b"Close")]}
    await cycle.send(closing)
    with pytest.raises(RuntimeError, match="longer than Content-Length"):
        await cycle.send({"type": "http.response.body", "body": b"too long"})
    assert not cycle.keep_alive and b"content-length: 5" in cycle._held
    for bad in ((b"bad name", b"v"), (b"x-ok", b"a\r\nInjected: 1")):
        fresh = _cycle(_Transport())
        with pytest.raises(RuntimeError, match="Invalid HTTP header"):
            bad_start: Any = {**_START, "headers": [bad]}
            await fresh.send(bad_start)
    no_content = _Transport()
    cycle = _cycle(no_content)
    await cycle.send({"type": "http.response.start", "status": 204, "headers": []})
    await cycle.send({"type": "http.response.body", "body": b""})
    assert b"transfer-encoding" not in no_content.writes[0] and cycle.response_complete
    with pytest.raises(RuntimeError, match="after the response"):
        await cycle.send(_BODY)
