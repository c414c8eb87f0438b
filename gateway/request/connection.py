"""One keep-alive connection to an upstream, an asyncio protocol: the response parsed by
httptools as it arrives, its body buffered up to `HIGH_WATER` (then reading pauses), the
waits for the next event bounded by a timeout and the request's deadline.
`gateway.request.client` pools these connections and sends requests over them."""

from __future__ import annotations

import asyncio
import collections
from typing import cast

import httptools

from gateway.base.errors import ConnectionDropped, UpstreamTimeout, UpstreamUnavailable

HIGH_WATER = 256 * 1024  # buffered response bytes before reading from the socket pauses
_PAST_DEADLINE = "the request's deadline passed"


class _StopParsing(Exception):
    """Raised in a parser callback to stop parsing (httptools wraps it in its own error)."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self._writable: asyncio.Future[None] | None = None
        self.reset(False)

    def reset(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only  # HEAD: the response has no body whatever it says
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.extra = False  # bytes past the response: the connection is discarded
        self.got_bytes = False
        self.error: Exception | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.complete:
            self._discard()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # also what a callback below raised
            if self.extra:
                self._discard()
            else:
                if self.error is None:
                    self.error = UpstreamUnavailable(f"invalid response from the upstream: {exc}")
                self.abort()
        self._wake()

    def _discard(self) -> None:
        """Bytes past the one response asked for: the response stands as it was parsed, the
        connection is never reused, and nothing of the extra bytes reaches anyone."""
        self.keep_alive = False
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and not _has_length(self.headers):
                self.complete = True  # read-until-close framing (RFC 9112 6.3, rule 8)
            else:
                self.error = ConnectionDropped("the upstream closed the connection")
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:  # a second response after the final one: never parsed, never merged
            self.extra = True
            raise _StopParsing
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:  # ... with no header field at all
            self.extra = True
            raise _StopParsing
        status = self.parser.get_status_code()
        if status == 101 or not 100 <= status <= 599:  # no upgrade was asked for
            self.error = UpstreamUnavailable(f"the upstream answered with status {status}")
            raise _StopParsing
        if status < 200:
            self.headers = []  # interim response (e.g. 103): not forwarded
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once complete
        if self.head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status:  # the final response, not an interim 1xx one
            self.complete = True

    # used by the pool and the response
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait(self, seconds: float, deadline: float, why: str) -> None:
        """Until the next event on this connection; abort it after `seconds`, or at the
        loop time `deadline` when that comes first."""
        left = deadline - self.loop.time()
        if left < seconds:
            seconds, why = left, _PAST_DEADLINE
        waiter = self.waiter = self.loop.create_future()
        # A bare timer is several times cheaper than asyncio.timeout() on this hot path
        # (and call_later than call_at, which goes through it in uvloop).
        timer = self.loop.call_later(seconds, self._time_out, waiter, why)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _time_out(self, waiter: asyncio.Future[None], why: str) -> None:
        if not waiter.done():
            self.abort()
            waiter.set_exception(UpstreamTimeout(why))

    async def drain(self, deadline: float) -> None:
        if self._writable is not None:
            # Rare (the upstream reads slower than the client sends): asyncio.timeout is fine.
            try:
                async with asyncio.timeout_at(deadline):
                    await self._writable
            except TimeoutError:
                self.abort()
                raise UpstreamTimeout(_PAST_DEADLINE) from None
        if self.closed:
            raise ConnectionDropped("the upstream closed the connection")

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self.chunks
            and self.keep_alive
        )


def _has_length(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            return True
    return False
