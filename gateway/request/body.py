"""The client's request body, as every stage reads it: capped, buffered, or streamed once.

Its own module (not the ASGI entry's) so that the features that read a body before the
upstream does (idempotency keys fingerprint it) import it without importing the proxy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from tempfile import SpooledTemporaryFile

from gateway.base.errors import BadRequest, BodyTooLarge
from gateway.base.types import Receive

_BLOCK = 64 * 1024  # a buffered body is sent in blocks of this size


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class RequestBody:
    """The client's body, capped at `limit` bytes while it arrives, and read whole before any
    upstream is asked (nginx's proxy_request_buffering): a slow upload then holds a gateway
    connection, never an upstream one, and the upstream gets a Content-Length. Up to
    `edge.body_buffer` bytes stay in memory, the rest goes to a temporary file.

    A chunked upload has no Content-Length to check up front, so the cap is enforced as the
    bytes arrive: on overflow the client gets 413 and no upstream sees any of it.
    """

    def __init__(self, receive: Receive, limit: int, tee: Tee | None = None) -> None:
        self._receive = receive
        self._limit = limit
        self.tee = tee  # a copy for the shadow request
        self._spool: SpooledTemporaryFile[bytes] | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ClientGone when the client leaves first."""
        received = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > self._limit:
                raise too_large(self._limit)
            if chunk:
                if self.tee is not None:
                    self.tee.add(chunk)
                yield chunk
            if not message.get("more_body", False):
                return

    async def buffer(self, memory: int) -> int:
        """Read the whole body; returns its size."""
        spool = SpooledTemporaryFile(max_size=memory)  # noqa: SIM115 (closed by close())
        try:
            async for chunk in self.stream():
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        self._spool = spool
        size = spool.tell()
        spool.seek(0)
        return size

    async def chunks(self) -> AsyncIterator[bytes]:
        """The buffered body, in blocks."""
        assert self._spool is not None
        while block := self._spool.read(_BLOCK):
            yield block

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def request_body(
    raw_headers: list[tuple[bytes, bytes]], receive: Receive, limit: int
) -> tuple[RequestBody | None, int | None]:
    """The body to stream and its length (None: chunked); no body -> (None, None)."""
    for name, value in raw_headers:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise BadRequest("invalid Content-Length") from None
            if length > limit:
                raise too_large(limit)
            return (RequestBody(receive, limit), length) if length else (None, None)
        if name == b"transfer-encoding":
            return RequestBody(receive, limit), None
    return None, None


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body exceeds {limit} bytes")


class Tee:
    """Keeps what streams past, up to `cap` bytes: the chunks themselves (bytes do not
    change), so a one-chunk body is kept without a copy."""

    __slots__ = ("cap", "chunks", "size", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        if self.truncated:
            return
        self.size += len(chunk)
        if self.size > self.cap:
            self.truncated = True
            self.chunks = []
            return
        self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        """What was kept; joining one chunk returns it as it is."""
        return b"".join(self.chunks)
