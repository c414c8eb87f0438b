"""Header rules as pure functions: both directions, trusted and untrusted peers."""

from __future__ import annotations

from gateway.config.routes import Route, Upstream
from gateway.request.headers import (
    request_id,
    response_headers,
    rewrite_location,
    upstream_request_headers,
)

UP = Upstream("legacy", "http://10.0.0.5:8001")


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def test_ipv6_peer_is_quoted_in_forwarded() -> None:
    out = dict(
        upstream_request_headers(
            [(b"host", b"shop.test")], peer="::1", scheme="https", trusted=False, request_id="r"
        )
    )
    assert out[b"forwarded"] == b'for="[::1]";proto=https;host="shop.test"'
    assert out[b"x-forwarded-for"] == b"::1" and out[b"x-forwarded-proto"] == b"https"


def test_untrusted_peer_cannot_add_to_the_chain() -> None:
    sent = [(b"x-forwarded-for", b"1.1.1.1"), (b"x-forwarded-for", b"2.2.2.2"), (b"host", b"h")]
    out = upstream_request_headers(
        sent, peer="9.9.9.9", scheme="http", trusted=False, request_id="r"
    )
    assert [v for n, v in out if n == b"x-forwarded-for"] == [b"9.9.9.9"]
    trusted = upstream_request_headers(
        sent, peer="9.9.9.9", scheme="http", trusted=True, request_id="r"
    )
    assert [v for n, v in trusted if n == b"x-forwarded-for"] == [b"1.1.1.1, 2.2.2.2, 9.9.9.9"]


def test_expect_and_identity_headers_are_dropped() -> None:
    sent = [(b"expect", b"100-continue"), (b"x-user-roles", b"admin"), (b"x-userx", b"kept")]
    out = names(
        upstream_request_headers(sent, peer="1.2.3.4", scheme="http", trusted=True, request_id="r")
    )
    assert b"expect" not in out and b"x-user-roles" not in out and b"x-userx" in out


def test_response_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    raw = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"keep-alive, X-Internal"),
        (b"X-Internal", b"secret"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Request-ID", b"upstream-made-this-up"),
    ]
    out, position = response_headers(
        raw, upstream=UP, route=None, public_origin=lambda: "http://g", request_id="rid"
    )
    assert position is None
    assert out == [
        (b"content-type", b"text/plain"),
        (b"x-request-id", b"rid"),
        (b"x-strangler-upstream", b"legacy"),
    ]


def test_location_rewriting() -> None:
    api = Route("api", "/api", "legacy", rewrite="/v2")

    def rewrite(value: str, route: Route | None = None) -> str:
        return rewrite_location(value.encode(), UP, route, "https://shop.test").decode()

    assert rewrite("http://10.0.0.5:8001/a?b=1") == "https://shop.test/a?b=1"
    assert rewrite("HTTP://10.0.0.5:8001/a") == "https://shop.test/a"
    assert rewrite("http://10.0.0.5:8002/a") == "http://10.0.0.5:8002/a"  # another origin
    assert rewrite("https://elsewhere.test/a") == "https://elsewhere.test/a"
    assert rewrite("relative/path") == "relative/path"
    assert rewrite("/v2/items?x=1", api) == "/api/items?x=1"
    assert rewrite("http://10.0.0.5:8001/v2", api) == "https://shop.test/api"
    assert rewrite("/other", api) == "/other"  # outside the rewritten prefix
    assert rewrite("http://10.0.0.5:notaport/a") == "http://10.0.0.5:notaport/a"


def test_request_id_validation() -> None:
    assert request_id([(b"x-request-id", b"a.b:c-1_2")]) == "a.b:c-1_2"
    made = request_id([(b"x-request-id", b"x" * 129)])
    assert len(made) == 32 and made != request_id([])
