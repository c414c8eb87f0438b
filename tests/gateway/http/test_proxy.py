"""The proxy end to end: a real gateway and a real upstream on loopback."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from common.validation import ConfigError
from gateway.config.table import parse
from gateway.http.accesslog import AccessLog
from tests.support.harness import (
    Gateway,
    Recorder,
    admin_auth,
    get,
    raw_request,
    serve_gateway,
    write_routes,
)

pytestmark = pytest.mark.anyio


async def test_routes_by_prefix_and_says_who_answered(gateway: Gateway, upstream: Recorder) -> None:
    search = await raw_request(gateway.port, get("/search?q=lamp"))
    assert search.status == 200
    assert search.header("x-strangler-upstream") == "search"
    assert search.json() == {
        "served_by": "upstream",
        "method": "GET",
        "path": "/search",
        "query": "q=lamp",
        "body_size": 0,
    }
    other = await raw_request(gateway.port, get("/searchx"))
    assert other.header("x-strangler-upstream") == "legacy"  # not a segment boundary
    post = await raw_request(gateway.port, get("/search").replace(b"GET", b"POST", 1))
    assert post.header("x-strangler-upstream") == "legacy"  # the route is GET-only


async def test_forwards_exactly_the_normalised_path(gateway: Gateway, upstream: Recorder) -> None:
    response = await raw_request(gateway.port, get("/a//b/./c/../%7euser/%41%2a?x=%2F"))
    assert response.status == 200
    assert upstream.seen[-1].raw_path == "/a/b/~user/A%2A"
    assert upstream.seen[-1].query == "x=%2F"  # the query string is passed as sent


@pytest.mark.parametrize(
    "path",
    [
        "/a/%2Fetc/passwd",
        "/a/%5Cwin",
        "/a/%00",
        "/a/..%2Fb",
        "/%2e%2e/admin",
        "/a/.%2E/b",
        "/..",
        "/a/../../etc",
        "/a;jsessionid=1",
        "/a/%zz",
        "/a/%4",
        "/a\\b",
    ],
)
async def test_rejects_unsafe_paths_with_json_400(
    gateway: Gateway, upstream: Recorder, path: str
) -> None:
    response = await raw_request(gateway.port, get(path))
    assert response.status == 400
    body = response.json()
    assert body["error"] == "bad_path"
    assert body["request_id"] == response.header("x-request-id")
    assert upstream.seen == []


async def test_rewrite_and_strip_prefix(gateway: Gateway, upstream: Recorder) -> None:
    await raw_request(gateway.port, get("/api/items/7"))
    await raw_request(gateway.port, get("/strip/items/7"))
    await raw_request(gateway.port, get("/strip"))
    assert [s.raw_path for s in upstream.seen] == ["/v2/items/7", "/items/7", "/"]


async def test_hop_by_hop_and_connection_named_headers_are_stripped(
    gateway: Gateway, upstream: Recorder
) -> None:
    head = (
        b"GET /echo HTTP/1.1\r\nHost: gateway.test\r\nConnection: close, X-Foo\r\n"
        b"X-Foo: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"Proxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n"
    )
    await raw_request(gateway.port, head)
    names = {k for k, _ in upstream.seen[-1].headers}
    for hop in ("x-foo", "keep-alive", "te", "upgrade", "proxy-authorization"):
        assert hop not in names
    assert upstream.seen[-1].header("x-kept") == ["yes"]
    # The gateway's own connection to the upstream is keep-alive: no "close" leaks through.
    assert upstream.seen[-1].header("connection") == []


async def test_client_identity_and_forwarding_headers_never_pass_as_sent(
    gateway: Gateway, upstream: Recorder
) -> None:
    head = get(
        "/echo",
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-Host: evil.test",
        "X-Forwarded-Proto: https",
        "Forwarded: for=6.6.6.6",
        "X-User-Id: admin",
        "X-User-Roles: admin",
        "X-Strangler-Upstream: search",
    )
    await raw_request(gateway.port, head)
    seen = upstream.seen[-1]
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]
    assert seen.header("x-forwarded-host") == ["gateway.test"]
    assert seen.header("x-forwarded-proto") == ["http"]
    assert seen.header("forwarded") == ['for=127.0.0.1;proto=http;host="gateway.test"']
    assert seen.header("x-user-id") == [] and seen.header("x-user-roles") == []
    assert seen.header("x-strangler-upstream") == []
    assert seen.header("host") == ["gateway.test"]  # passed on: the default


async def test_trusted_proxy_headers_are_appended_to(upstream: Recorder, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\ndefault: legacy\n'
        "trusted_proxies: [127.0.0.0/8]\n",
    )
    async with serve_gateway(routes) as gw:
        head = get(
            "/echo",
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: shop.example",
            "Forwarded: for=203.0.113.9;proto=https",
            "X-User-Id: admin",
        )
        await raw_request(gw.port, head)
    seen = upstream.seen[-1]
    assert seen.header("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert seen.header("x-forwarded-proto") == ["https"]
    assert seen.header("x-forwarded-host") == ["shop.example"]
    assert seen.header("forwarded") == [
        'for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host="gateway.test"'
    ]
    assert seen.header("x-user-id") == []  # identity headers are never trusted


async def test_request_id_is_propagated_or_created(gateway: Gateway, upstream: Recorder) -> None:
    given = await raw_request(gateway.port, get("/echo", "X-Request-ID: abc-123"))
    assert given.header("x-request-id") == "abc-123"
    assert upstream.seen[-1].header("x-request-id") == ["abc-123"]
    bad = await raw_request(gateway.port, get("/echo", "X-Request-ID: <script>"))
    created = bad.header("x-request-id")
    assert created is not None and len(created) == 32 and created != "<script>"
    assert upstream.seen[-1].header("x-request-id") == [created]


async def test_location_pointing_at_the_upstream_is_rewritten(
    gateway: Gateway, upstream: Recorder
) -> None:
    response = await raw_request(gateway.port, get("/api/redirect"))
    assert response.status == 302  # redirects are passed on, never followed
    assert response.header("location") == "http://gateway.test/api/next?x=1"
    assert len(upstream.seen) == 1


async def test_refused_upstream_is_502_json(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, 'upstreams:\n  gone: {url: "http://127.0.0.1:9"}\ndefault: gone\n')
    async with serve_gateway(routes) as gw:
        response = await raw_request(gw.port, get("/x"))
    assert response.status == 502
    body = response.json()
    assert body["error"] == "upstream_unavailable"
    assert body["request_id"] == response.header("x-request-id")


async def test_slow_upstream_is_504_json(upstream: Recorder, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes, f'upstreams:\n  slow: {{url: "{upstream.url}", timeout: 200ms}}\ndefault: slow\n'
    )
    async with serve_gateway(routes) as gw:
        response = await raw_request(gw.port, get("/slow"))
    assert response.status == 504
    assert response.json()["error"] == "upstream_timeout"


async def test_no_route_without_default_is_404_json(upstream: Recorder, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  a: {{url: "{upstream.url}"}}\nroutes:\n'
        "  - {name: a, path: /a, upstream: a}\n",
    )
    async with serve_gateway(routes) as gw:
        response = await raw_request(gw.port, get("/b"))
    assert (response.status, response.json()["error"]) == (404, "no_route")


async def test_oversized_body_with_content_length_is_413(
    gateway: Gateway, upstream: Recorder
) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: g\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert (response.status, response.json()["error"]) == (413, "body_too_large")
    assert upstream.seen == []


async def test_oversized_chunked_body_is_413_and_upstream_never_gets_it_whole(
    gateway: Gateway, upstream: Recorder
) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%b\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    head = (
        b"POST /echo HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    response = await raw_request(gateway.port, head, body)
    assert (response.status, response.json()["error"]) == (413, "body_too_large")
    assert all(s.body_size <= 1024 * 1024 for s in upstream.seen)


async def test_chunked_upload_is_buffered_and_framed_by_its_length(
    gateway: Gateway, upstream: Recorder
) -> None:
    chunks = [b"a" * 1000, b"b" * 5000, b"c"]
    body = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (
        b"PUT /echo HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    response = await raw_request(gateway.port, head, body)
    assert response.status == 200
    assert upstream.seen[-1].body_size == 6001
    assert upstream.seen[-1].header("transfer-encoding") == []
    assert upstream.seen[-1].header("content-length") == ["6001"]


async def test_head_and_keep_alive_reuse(gateway: Gateway, upstream: Recorder) -> None:
    head = b"HEAD /echo HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status == 200 and response.body == b""
    for _ in range(3):
        assert (await raw_request(gateway.port, get("/echo"))).status == 200
    ports = {s.header("x-forwarded-for")[0] for s in upstream.seen}
    assert ports == {"127.0.0.1"}


async def test_admin_routes_shows_the_active_version(gateway: Gateway, upstream: Recorder) -> None:
    response = await raw_request(gateway.port, get("/_strangler/routes", admin_auth()))
    body = response.json()
    assert response.status == 200
    assert body["version"] == gateway.app.watcher.table.version
    assert [r["name"] for r in body["routes"]] == ["search", "api", "strip", "big"]
    assert body["source"].endswith("routes.yaml")
    assert upstream.seen == []  # admin paths are never forwarded
    missing = await raw_request(gateway.port, get("/_strangler/nope", admin_auth()))
    assert missing.status == 404


async def test_one_json_access_log_line_per_request(upstream: Recorder, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\ndefault: legacy\n'
        "routes:\n  - {name: search, path: /search, upstream: legacy}\n",
    )
    stream = io.BytesIO()
    async with serve_gateway(routes, AccessLog(stream, interval=60)) as gw:
        await raw_request(gw.port, get("/search//x?q=1", "X-Request-ID: log-1"))
        await raw_request(gw.port, get("/a/%2F"))
    # shutdown flushed the batch
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == "log-1" and first["path"] == "/search/x"
    assert (first["route"], first["upstream"], first["status"]) == ("search", "legacy", 200)
    assert first["bytes"] > 0 and first["duration_ms"] > 0 and first["client"] == "127.0.0.1"
    assert (second["status"], second["route"], second["upstream"]) == (400, None, None)


async def test_client_leaving_mid_upload_never_completes_the_upstream_request(
    upstream: Recorder, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(routes, f'upstreams:\n  legacy: {{url: "{upstream.url}"}}\ndefault: legacy\n')
    stream = io.BytesIO()
    async with serve_gateway(routes, AccessLog(stream, interval=60)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: g\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10
        )
        await writer.drain()
        writer.close()
        assert await reader.read() == b""  # no answer: the client is gone
    # leaving the context waited for the gateway to finish the request
    (line,) = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    assert line["status"] == 499
    assert all(seen.body_size < 1000 for seen in upstream.seen)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("", "gateway.test"),
        ("host: upstream", None),
        ("host: shop.internal:8443", "shop.internal:8443"),
    ],
    ids=["client (default)", "upstream", "fixed"],
)
async def test_the_host_an_upstream_gets_and_redirects_in_every_mode(
    upstream: Recorder, tmp_path: Path, mode: str, expected: str | None
) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{upstream.url}", {mode or "timeout: 5s"}}}\n'
        "default: legacy\n",
    )
    async with serve_gateway(routes) as gw:
        response = await raw_request(gw.port, get("/x/redirect"))
    seen = upstream.seen[-1]
    assert seen.header("host") == [expected or upstream.url.removeprefix("http://")]
    assert seen.header("x-forwarded-host") == ["gateway.test"]  # as it is in every mode
    assert response.status == 302
    assert response.header("location") == "http://gateway.test/v2/next?x=1"


def test_an_upstreams_host_must_be_client_upstream_or_a_name() -> None:
    text = 'upstreams:\n  a: {url: "http://127.0.0.1:9", host: "a/b"}\ndefault: a\n'
    with pytest.raises(ConfigError) as info:
        parse((text + "auth: {default: none}\nauthz: none\n").encode(), "routes.yaml")
    assert [str(i) for i in info.value.issues] == [
        "line 2: upstream 'a': host: 'a/b' is not client, upstream or a host name"
        " (with an optional port)"
    ]
