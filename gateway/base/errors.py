"""The gateway's own error answers: JSON with a stable `error` code and the request id.

    GatewayError
     +-- BadRequest            400 bad_path, bad_request, bad_target
     +-- Unauthorized          401 unauthorized (with WWW-Authenticate: Bearer ...)
     +-- Forbidden             403 forbidden (the policy's reason in `detail`)
     +-- NotFound              404 no_route, not_found
     +-- MethodNotAllowed      405 method_not_allowed
     +-- RequestTimeout        408 request_timeout (headers or body not sent in time)
     +-- IdempotencyConflict   409 idempotency_conflict, idempotency_response_not_kept
     +-- BodyTooLarge          413 body_too_large
     +-- TargetTooLong         414 target_too_long
     +-- IdempotencyMismatch   422 idempotency_key_reused
     +-- TooManyRequests       429 rate_limited (with Retry-After and RateLimit headers)
     +-- HeadersTooLarge       431 headers_too_large
     +-- NotImplementedByGateway 501 not_implemented (a transfer coding, an upgrade)
     +-- UpstreamUnavailable   502 upstream_unavailable (refused, reset, bad response)
     |    +-- ConnectFailed          the TCP connect failed: nothing was sent
     |    +-- ConnectionDropped      closed or reset before the response was complete
     +-- Unavailable           503 (with Retry-After, answered at once)
     |    +-- CircuitOpen            503 circuit_open: the upstream's breaker is open
     |    +-- Overloaded             503 overloaded: in-flight limit reached, request shed
     |    +-- TooManyConnections     503 too_many_connections: the connection cap is reached
     |    +-- ShuttingDown           503 shutting_down: cut off by the shutdown timeout
     +-- StoreUnavailable      503 store_unavailable (shared store down, failure policy closed)
     +-- UpstreamTimeout       504 upstream_timeout
     |    +-- ConnectTimeout         the TCP connect timed out: nothing was sent
     +-- VersionNotSupported   505 http_version_not_supported

The upstream client (gateway.request.client) raises the upstream errors itself, from its own
protocol callbacks; the server layer (gateway.http.server) answers the 400/405/408/414/431/501/505
ones before a request reaches the application, with the same JSON body (`error_response`).
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus

from gateway.base.types import BODY_FOLLOWS, Message, Send


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or []


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class BadPath(BadRequest):
    code = "bad_path"


class BadTarget(BadRequest):
    """X-Strangler-Target, from a caller allowed to choose, names no upstream of the route."""

    code = "bad_target"


class Unauthorized(GatewayError):
    """401; without a token the challenge carries no error (RFC 6750 3.1), with a bad one
    it says invalid_token and why. The token itself is never echoed."""

    status = 401
    code = "unauthorized"

    def __init__(self, detail: str, invalid_token: bool) -> None:
        challenge = 'Bearer realm="strangler"'
        if invalid_token:
            quoted = detail.replace("\\", "").replace('"', "'")
            challenge += f', error="invalid_token", error_description="{quoted}"'
        super().__init__(detail, [(b"www-authenticate", challenge.encode("ascii", "replace"))])


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class NoRoute(NotFound):
    code = "no_route"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    status = 408
    code = "request_timeout"


class IdempotencyConflict(GatewayError):
    status = 409
    code = "idempotency_conflict"


class ResponseNotKept(IdempotencyConflict):
    code = "idempotency_response_not_kept"


class BodyTooLarge(GatewayError):
    status = 413
    code = "body_too_large"


class TargetTooLong(GatewayError):
    status = 414
    code = "target_too_long"


class IdempotencyMismatch(GatewayError):
    status = 422
    code = "idempotency_key_reused"


class TooManyRequests(GatewayError):
    status = 429
    code = "rate_limited"


class HeadersTooLarge(GatewayError):
    status = 431
    code = "headers_too_large"


class NotImplementedByGateway(GatewayError):
    status = 501
    code = "not_implemented"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"


class ConnectFailed(UpstreamUnavailable):
    """Refused or unreachable: the request was not sent, so any method may be retried."""


class ConnectionDropped(UpstreamUnavailable):
    """The upstream closed or reset the connection before its response was complete."""


class Unavailable(GatewayError):
    """503 answered at once, never queued; `retry_after` seconds go in Retry-After."""

    status = 503
    code = "unavailable"

    def __init__(self, detail: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))  # RFC 9110 10.2.3: whole seconds
        super().__init__(detail, [(b"retry-after", str(seconds).encode())])


class CircuitOpen(Unavailable):
    code = "circuit_open"


class Overloaded(Unavailable):
    code = "overloaded"


class TooManyConnections(Unavailable):
    code = "too_many_connections"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


class ConnectTimeout(UpstreamTimeout):
    """The TCP connect timed out: the request was not sent."""


class VersionNotSupported(GatewayError):
    status = 505
    code = "http_version_not_supported"


def _json(
    body: object, extra_headers: list[tuple[bytes, bytes]] | None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *(extra_headers or ()),
    ]
    return payload, headers


async def send_json(
    send: Send,
    status: int,
    body: object,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload, headers = _json(body, extra_headers)
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    start[BODY_FOLLOWS] = True  # the body is at hand
    await send(start)
    await send({"type": "http.response.body", "body": payload})


def _error(
    error: GatewayError, request_id: str
) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    body = {"error": error.code, "detail": error.detail, "request_id": request_id}
    return body, [(b"x-request-id", request_id.encode()), *error.headers]


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    body, headers = _error(error, request_id)
    await send_json(send, error.status, body, headers)


def error_response(error: GatewayError, request_id: str) -> bytes:
    """The whole HTTP/1.1 response for `error`, for the server layer, which writes it to the
    socket itself and then closes the connection."""
    payload, headers = _json(*_error(error, request_id))
    try:
        phrase = HTTPStatus(error.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {error.status} {phrase}".encode("ascii")]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload
