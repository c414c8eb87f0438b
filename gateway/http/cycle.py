"""The request cycle: uvicorn's, with its `send` made for a proxy's answers.

uvicorn's cycle writes a response's head when the application sends `http.response.start`
and its body when it sends `http.response.body`: two writes, two system calls, and on
loopback the writes were about a fifth of the gateway's time per request. It also runs two
regular expressions per header. Here:

- a start message that carries `BODY_FOLLOWS` (the relay sets it when the upstream's body is
  already buffered, the error answers always) has its head held and written together with
  the first body message, in one write. Without the key the head goes out at once, as
  uvicorn's does, so an application that waits before its body (a stream) is not delayed;
- the header names and values are checked for forbidden bytes (uvicorn's two expressions)
  in one search each over all of them, not once per header;
- failures are answered in the gateway's JSON, not uvicorn's plain text; uvicorn's own
  access log is not written (the gateway's config turns it off: it writes its own).

What is sent is otherwise uvicorn's: the framing rules (Content-Length counted,
`Transfer-Encoding: chunked` when neither is given, none for HEAD, 204 and 304),
`Connection: close` when the connection will close, and its errors for a misused `send`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from gateway.base.errors import GatewayError, error_response
from gateway.base.types import BODY_FOLLOWS
from gateway.request import headers as header_rules

# The request cycles' logger: uvicorn's, less the line it writes when the application ends a
# response short, which the gateway does on purpose when an upstream fails mid-body (and
# logs itself, once): a second line per failure would say the same in other words.
_CUT = "ASGI callable returned without completing response."
CYCLE_LOG = logging.getLogger("uvicorn.error.edge")
CYCLE_LOG.addFilter(lambda record: record.msg != _CUT)
_NO_BODY_STATUSES = (204, 304)


class JsonCycle(RequestResponseCycle):
    """One request's cycle on an `EdgeProtocol` connection."""

    _held = b""  # a response head waiting for its body

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected 'http.response.start', got {message['type']!r}.")
            headers: Iterable[tuple[bytes, bytes]] = message.get("headers", ())
            if self.default_headers:
                headers = [*self.default_headers, *headers]
            head = self._head(message["status"], headers)
            if message.get(BODY_FOLLOWS):
                self._held = head
            else:
                self.transport.write(head)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r} after the response.")
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected 'http.response.body', got {message['type']!r}.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            body = b""
        elif self.chunked_encoding:
            framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            body = framed if more_body else framed + b"0\r\n\r\n"
        elif len(body) > self.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        else:
            self.expected_content_length -= len(body)
        if self._held:
            body, self._held = self._held + body, b""
        if body:
            self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """The status line and header block, as uvicorn writes them; sets the framing."""
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [STATUS_LINE[status]]
        names = []
        values = []
        closing = False
        for raw_name, value in headers:
            name = raw_name.lower()
            names.append(name)
            values.append(value)
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in _tokens(value):
                self.keep_alive = False
                closing = True
            content += (name, b": ", value, b"\r\n")
        if HEADER_RE.search(b"".join(names)):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join(values)):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not closing:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in _NO_BODY_STATUSES
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    async def send_500_response(self) -> None:
        """Where uvicorn would answer a failed application in plain text."""
        self.keep_alive = False
        self.transport.write(
            error_response(GatewayError("the gateway failed"), header_rules.request_id([]))
        )
        self.transport.close()
        self.response_started = self.response_complete = True


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]
