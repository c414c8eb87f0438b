"""The gateway's own error answers: JSON with a stable `error` code and the request id.

    GatewayError
     +-- BadRequest            400 bad_path, bad_request, bad_target
     +-- Unauthorized          401 unauthorized (with WWW-Authenticate: Bearer ...)
     +-- Forbidden             403 forbidden (the policy's reason in `detail`)
     +-- NotFound              404 no_route, not_found
     +-- MethodNotAllowed      405 method_not_allowed
     +-- IdempotencyConflict   409 idempotency_conflict, idempotency_response_not_kept
     +-- BodyTooLarge          413 body_too_large
     +-- IdempotencyMismatch   422 idempotency_key_reused
     +-- TooManyRequests       429 rate_limited (with Retry-After and RateLimit headers)
     +-- UpstreamUnavailable   502 upstream_unavailable (refused, reset, bad response)
     |    +-- ConnectFailed          the TCP connect failed: nothing was sent
     |    +-- ConnectionDropped      closed or reset before the response was complete
     +-- Unavailable           503 (with Retry-After, answered at once)
     |    +-- CircuitOpen            503 circuit_open: the upstream's breaker is open
     |    +-- Overloaded             503 overloaded: in-flight limit reached, request shed
     +-- StoreUnavailable      503 store_unavailable (shared store down, failure policy closed)
     +-- UpstreamTimeout       504 upstream_timeout
          +-- ConnectTimeout         the TCP connect timed out: nothing was sent

Foreign errors (aiohttp's, asyncio's) are translated into this tree in one place,
`gateway.proxy.translate_upstream_errors`, the way httpx maps httpcore's exceptions.
"""

from __future__ import annotations

import json
import math

from gateway.types import Send


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


class IdempotencyConflict(GatewayError):
    status = 409
    code = "idempotency_conflict"


class ResponseNotKept(IdempotencyConflict):
    code = "idempotency_response_not_kept"


class BodyTooLarge(GatewayError):
    status = 413
    code = "body_too_large"


class IdempotencyMismatch(GatewayError):
    status = 422
    code = "idempotency_key_reused"


class TooManyRequests(GatewayError):
    status = 429
    code = "rate_limited"


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


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


class ConnectTimeout(UpstreamTimeout):
    """The TCP connect timed out: the request was not sent."""


async def send_json(
    send: Send,
    status: int,
    body: object,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *(extra_headers or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    body = {"error": error.code, "detail": error.detail, "request_id": request_id}
    headers = [(b"x-request-id", request_id.encode()), *error.headers]
    await send_json(send, error.status, body, headers)
