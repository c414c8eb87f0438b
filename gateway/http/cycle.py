"""The request cycle: uvicorn's, answering failures in JSON and writing each small answer in
one write.

uvicorn writes a response's head when the application sends `http.response.start` and its
body when it sends `http.response.body`: two writes, two system calls, and on loopback
about a fifth of the gateway's time per request went to them. Here the head is held back
until the first body message, and both go out in one `writelines`. An application that
sends the head and then waits before its body (a stream whose first event comes later)
does not wait for it: the held head is written at the loop's next turn (`call_soon`), so
the client sees it as soon as uvicorn would have sent it, less a turn of the loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from gateway.base.errors import GatewayError, error_response
from gateway.request import headers as header_rules

# The request cycles' logger: uvicorn's, less the line it writes when the application ends a
# response short, which the gateway does on purpose when an upstream fails mid-body (and
# logs itself, once): a second line per failure would say the same in other words.
_CUT = "ASGI callable returned without completing response."
CYCLE_LOG = logging.getLogger("uvicorn.error.edge")
CYCLE_LOG.addFilter(lambda record: record.msg != _CUT)


class _Head:
    """Taken for the transport while uvicorn's `send` writes a head: keeps it."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _Prefixed:
    """Taken for the transport while uvicorn's `send` writes the first body bytes: the held
    head goes out in front of them, in one write."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        if self.head:
            self.transport.writelines((self.head, data))
            self.head = b""
        else:
            self.transport.write(data)

    def flush(self) -> None:
        """The head alone, when no body bytes were written (an answer to HEAD writes none)."""
        if self.head:
            self.transport.write(self.head)
            self.head = b""

    def close(self) -> None:
        self.flush()
        self.transport.close()


class JsonCycle(RequestResponseCycle):
    """One request's cycle on an `EdgeProtocol` connection."""

    _held = b""  # a response head not yet written
    _flush: asyncio.Handle | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused or self.disconnected:
            self._write_held()  # uvicorn's send waits for the drain (or drops): nothing held
            await super().send(message)
        elif not self.response_started:
            await self._send_head(message)
        elif self._held:
            await self._send_with_head(message)
        else:
            await super().send(message)

    async def _send_head(self, message: ASGISendEvent) -> None:
        """uvicorn's send of the head, with the head kept instead of written (its send does
        not wait here: the flow is not paused)."""
        transport = self.transport
        held = _Head()
        self.transport = cast(asyncio.Transport, held)
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if held.data:
            self._held = held.data
            self._flush = asyncio.get_running_loop().call_soon(self._write_held)

    async def _send_with_head(self, message: ASGISendEvent) -> None:
        head, self._held = self._held, b""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        transport = self.transport
        prefixed = _Prefixed(transport, head)
        self.transport = cast(asyncio.Transport, prefixed)
        try:
            await super().send(message)
        finally:
            self.transport = transport
            if not transport.is_closing():
                prefixed.flush()

    def _write_held(self) -> None:
        """The application did not send its body at once: the head goes out alone."""
        self._flush = None
        head, self._held = self._held, b""
        if head and not self.transport.is_closing():
            self.transport.write(head)

    async def send_500_response(self) -> None:
        """Where uvicorn would answer a failed application in plain text."""
        self.keep_alive = False
        self.transport.write(
            error_response(GatewayError("the gateway failed"), header_rules.request_id([]))
        )
        self.transport.close()
        self.response_started = self.response_complete = True
