"""The request pipeline's stages, each on its own: a RequestContext in, its part filled in
(or the gateway error that answers the request) out."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.base.errors import BadPath, Forbidden, NoRoute, Unauthorized
from gateway.base.types import BODY_FOLLOWS, Message
from gateway.config.table import RouteTable, parse
from gateway.http.forward import relay
from gateway.http.stages import (
    Endpoints,
    RequestRecord,
    authenticate_request,
    authorize_request,
    match_route,
    normalise_path,
)
from gateway.identity.guard import Access, Guard
from gateway.identity.policy import Decision
from gateway.identity.tokens import AuthSettings, InMemoryRevocations
from gateway.observe.metrics import Metrics
from gateway.observe.monitor import Monitor
from gateway.observe.traffic import Traffic
from gateway.request.context import RequestContext

pytestmark = pytest.mark.anyio

ROUTES = b"""upstreams:
  legacy: {url: "http://127.0.0.1:9"}
  search: {url: "http://127.0.0.1:8"}
default: legacy
auth: {default: none}
authz: none
routes:
  - {name: search, path: /search, upstream: search}
"""


def context(path: str = "/search", table: RouteTable | None = None, **extra: Any) -> RequestContext:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"gw.test")],
        "client": ("192.0.2.1", 1),
        **extra,
    }
    return RequestContext(scope, table or parse(ROUTES), "req-1", time.perf_counter())


class Policy:
    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.inputs: list[Mapping[str, Any]] = []

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        self.inputs.append(input)
        return Decision(allow=self.allow, reason=None if self.allow else "not you")

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def guard(policy: Policy | None = None, mode: str = "none") -> Guard:
    checking = Guard(AuthSettings(default=mode), None, InMemoryRevocations())
    checking.engine = policy
    return checking


def test_normalise_sets_the_path_once_and_rejects_a_bad_one() -> None:
    ctx = context("/search/../search/./x")
    assert normalise_path(ctx) == ctx.path == "/search/x"
    with pytest.raises(BadPath):
        normalise_path(context("/%00"))


def test_match_sets_the_route_and_its_upstream_or_the_default() -> None:
    ctx = context()
    match_route(ctx, "/search")
    assert ctx.route is not None and ctx.route.name == "search"
    assert ctx.upstream is not None and ctx.upstream.name == "search"
    other = context("/else")
    match_route(other, "/else")
    assert other.route is None and other.upstream is not None and other.upstream.name == "legacy"
    no_default = parse(ROUTES.replace(b"default: legacy\n", b""))
    with pytest.raises(NoRoute):
        match_route(context("/else", no_default), "/else")


async def test_authenticate_requires_a_token_when_the_route_does() -> None:
    ctx = context()
    match_route(ctx, "/search")
    assert ctx.route is not None
    await authenticate_request(ctx, guard())
    ctx.route = dataclasses.replace(ctx.route, auth="required")
    with pytest.raises(Unauthorized):
        await authenticate_request(ctx, guard())
    assert ctx.identity is None


async def test_authorize_asks_about_the_pick_and_keeps_a_denial_for_the_log() -> None:
    ctx = context()
    match_route(ctx, "/search")
    ctx.path, ctx.override = "/search", "legacy"
    policy = Policy(allow=False)
    with pytest.raises(Forbidden, match="not you"):
        await authorize_request(ctx, guard(policy))
    assert ctx.access is not None and ctx.access.denial is not None
    (asked,) = policy.inputs
    assert asked["target"] == "search" and asked["override"] == "legacy"
    allowed = Policy(allow=True)
    await authorize_request(ctx, guard(allowed))
    assert ctx.access.denial is None and ctx.access.decision is not None


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


class FakeAdmin:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, path: str, scope: Any, send: Any, request_id: str) -> int:
        self.paths.append(path)
        return 200


async def test_the_gateway_endpoints_are_answered_without_an_upstream() -> None:
    admin = FakeAdmin()

    monitor = Monitor(Traffic(), Metrics(), None, None)  # type: ignore[arg-type]
    endpoints = Endpoints(admin, monitor)  # type: ignore[arg-type]
    health = context("/_strangler/health")
    assert endpoints.owns(health, "/_strangler/health")
    assert not endpoints.owns(health, "/search")
    await endpoints.serve(health, "/_strangler/health", guard(), Sent())
    assert admin.paths == ["/_strangler/health"] and health.status == 200
    assert health.access is None and health.upstream is None  # liveness: no token asked
    routes = context("/_strangler/routes")
    with pytest.raises(Unauthorized):  # the admin API is never anonymous
        await endpoints.serve(routes, "/_strangler/routes", guard(), Sent())
    assert admin.paths == ["/_strangler/health"]


class Counting:
    def __init__(self) -> None:
        self.counted: list[tuple[Any, ...]] = []

    def count(self, *args: Any) -> None:
        self.counted.append(args)


class Lines:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, line: dict[str, Any]) -> None:
        self.lines.append(line)


class Evidence:
    def __init__(self) -> None:
        self.observed: list[tuple[str, str, int]] = []

    def observe(self, route: str, upstream: str, status: int, ms: float) -> None:
        self.observed.append((route, upstream, status))


def test_record_counts_logs_and_keeps_the_split_evidence() -> None:
    monitor, lines, evidence = Counting(), Lines(), Evidence()
    record = RequestRecord(monitor, evidence, lines)  # type: ignore[arg-type]
    ctx = context()
    match_route(ctx, "/search")
    ctx.path, ctx.status, ctx.sent, ctx.measured = "/search", 200, 5, True
    ctx.access = Access(None, Decision(allow=True, decision_id="d"), 1.5)
    record(ctx)
    ((route, upstream, status, _, access),) = monitor.counted
    assert (route.name, upstream.name, status, access) == ("search", "search", 200, ctx.access)
    (line,) = lines.lines
    assert line["route"] == "search" and line["status"] == 200 and line["bytes"] == 5
    assert line["decision"]["id"] == "d" and line["user"] is None
    assert evidence.observed == [("search", "search", 200)]
    bad = context("/%00")
    record(bad)
    assert len(evidence.observed) == 1  # not measured: no evidence
    assert lines.lines[-1]["path"] == "/%00" and lines.lines[-1]["route"] is None


class Response:
    """An upstream response whose body fails after `fail_after` chunks (None: never)."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.status = 200
        self.headers = [(b"content-type", b"text/plain")]
        self._chunks = chunks
        self._fail_after = fail_after
        self.at_eof = False
        self.buffered = True  # the first read does not wait

    async def read(self) -> bytes:
        if self._fail_after is not None and self._fail_after == 0:
            raise ConnectionResetError("gone")
        if self._fail_after is not None:
            self._fail_after -= 1
        chunk = self._chunks.pop(0) if self._chunks else b""
        self.at_eof = not self._chunks
        return chunk


async def test_relay_streams_the_answer_with_the_cookie_and_counts_the_bytes() -> None:
    ctx = context()
    match_route(ctx, "/search")
    ctx.cookie = b"strangler_sticky=x"
    sent = Sent()
    await relay(Response([b"ab", b"cde"]), sent, ctx, None)  # type: ignore[arg-type]
    start = sent.messages[0]
    assert start["status"] == 200 and (b"set-cookie", b"strangler_sticky=x") in start["headers"]
    assert start[BODY_FOLLOWS] is True  # the server may write head and first chunk at once
    assert (b"x-strangler-upstream", b"search") in start["headers"]
    assert b"".join(m.get("body", b"") for m in sent.messages[1:]) == b"abcde"
    assert (ctx.status, ctx.sent) == (200, 5)


async def test_relay_cut_short_mid_body_is_a_502_for_the_log() -> None:
    ctx = context()
    match_route(ctx, "/search")
    await relay(Response([b"ab", b"cd"], fail_after=1), Sent(), ctx, None)  # type: ignore[arg-type]
    assert (ctx.status, ctx.sent) == (502, 2)
