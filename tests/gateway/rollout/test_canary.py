"""The weighted split end to end: sticky users (token, cookie, address), reloads, the
tester override decided by the real policy, and the evidence the gateway keeps."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from gateway.rollout import sticky
from tests.support import ROOT
from tests.support.harness import Gateway, Recorder, get, raw_request, serve_gateway, serve_upstream

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"
SECRET = "canary-test-secret-0123456789abcdef"
POLICY = "{engine: embedded, policies: policies}"
ROUTES = """\
upstreams:
  legacy: {{url: "{legacy}", timeout: 2s}}
  search: {{url: "{search}", timeout: 2s}}
default: legacy
trusted_proxies: [127.0.0.1]     # the tests speak for clients behind a proxy
auth:
  default: optional
  keys:
    - {{id: dev, algorithm: HS256, secret: "{secret}"}}
authz: {authz}
shadow_store: {{url: "sqlite:///{store}"}}   # where the canary's evidence is saved
routes:
  - name: search
    path: /search
    upstream: {{legacy: {legacy_share}, search: {search_share}}}
  - name: products
    path: /products
    upstream: legacy
"""


def token(sub: str, *roles: str) -> str:
    now = int(time.time())
    claims = {"sub": sub, "roles": list(roles), "iat": now, "exp": now + 300}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "dev"})


def seen(recorder: Recorder, header: str) -> list[str]:
    return [value for request in recorder.seen for value in request.header(header)]


def write(
    routes: Path, legacy: Recorder, search: Recorder, shares: tuple[int, int], authz: str
) -> None:
    routes.write_text(
        ROUTES.format(
            legacy=legacy.url,
            search=search.url,
            secret=SECRET,
            authz=authz,
            store=routes.parent / "shadow.db",
            legacy_share=shares[0],
            search_share=shares[1],
        )
    )


class Stack:
    def __init__(self, gateway: Gateway, legacy: Recorder, search: Recorder, routes: Path):
        self.gateway, self.legacy, self.search, self.routes = gateway, legacy, search, routes

    def write(self, legacy_share: int, search_share: int, authz: str = POLICY) -> None:
        write(self.routes, self.legacy, self.search, (legacy_share, search_share), authz)

    def reload(self) -> None:
        assert self.gateway.app.watcher.reload(), self.gateway.app.watcher.last_failure

    async def ask(self, *headers: str, path: str = "/search?q=lamp") -> tuple[str, dict[str, str]]:
        response = await raw_request(self.gateway.port, get(path, *headers))
        assert response.status == 200, response.body
        served_by = response.header("x-strangler-upstream")
        assert served_by == response.json()["served_by"]
        return served_by, dict(response.headers)

    async def as_user(self, sub: str, *roles: str, extra: tuple[str, ...] = ()) -> str:
        served_by, headers = await self.ask(f"Authorization: Bearer {token(sub, *roles)}", *extra)
        assert "set-cookie" not in headers  # a token is enough: no cookie
        return served_by


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    shutil.copytree(POLICIES, tmp_path / "policies")
    async with serve_upstream("legacy") as legacy, serve_upstream("search") as search:
        routes = tmp_path / "routes.yaml"
        write(routes, legacy, search, (70, 30), POLICY)
        async with serve_gateway(routes) as gw:
            yield Stack(gw, legacy, search, routes)


def predicted(stack: Stack, key: bytes) -> str:
    split = stack.gateway.app.watcher.table.routes[0].rollout.split
    assert split is not None
    return split.pick(key)


async def test_signed_in_users_are_split_by_sub_and_stay(stack: Stack) -> None:
    users = [f"user-{i}" for i in range(300)]
    first = {user: await stack.as_user(user, "buyer") for user in users}
    assert first == {user: predicted(stack, f"sub:{user}".encode()) for user in users}
    again = {user: await stack.as_user(user, "buyer") for user in users[:60]}
    assert again == {user: first[user] for user in users[:60]}
    on_search = list(first.values()).count("search")
    assert abs(on_search - 90) <= 5 * math.sqrt(300 * 0.3 * 0.7), on_search
    stats = stack.gateway.app.gateway.assigner.stats["search"]
    assert sum(stats.assigned.values()) == 360 and stats.cookies_set == 0
    epoch = stack.gateway.app.gateway.evidence.epochs["search"]
    assert {name: s.requests for name, s in epoch.upstreams.items()} == {
        "legacy": stats.assigned["legacy"],
        "search": stats.assigned["search"],
    }


async def test_reloads_keep_users_and_raising_the_share_moves_only_legacy_users(
    stack: Stack,
) -> None:
    users = [f"user-{i}" for i in range(120)]
    before = {user: await stack.as_user(user) for user in users}
    stack.routes.write_text(stack.routes.read_text() + "# an unrelated edit\n")
    stack.reload()
    assert {user: await stack.as_user(user) for user in users} == before
    stack.write(40, 60)
    stack.reload()
    after = {user: await stack.as_user(user) for user in users}
    moved = {(before[u], after[u]) for u in users if before[u] != after[u]}
    assert moved == {("legacy", "search")}
    stack.write(70, 30)
    stack.reload()
    assert {user: await stack.as_user(user) for user in users} == before


async def test_anonymous_users_get_a_cookie_that_keeps_their_assignment(stack: Stack) -> None:
    served_by, headers = await stack.ask()
    cookie = headers["set-cookie"]
    value = cookie.split(";")[0].removeprefix("strangler_sticky=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=" in cookie
    assert "Path=/" in cookie and "Secure" not in cookie
    assert served_by == predicted(stack, b"c:" + value.encode())
    for _ in range(5):
        again, headers = await stack.ask(f"Cookie: strangler_sticky={value}")
        assert again == served_by and "set-cookie" not in headers
    assert stack.gateway.app.gateway.assigner.stats["search"].cookies_set == 1
    # the cookie is not identity: the upstream gets no X-User-Id from it
    assert not seen(stack.legacy, "x-user-id") and not seen(stack.search, "x-user-id")


async def test_without_cookies_clients_are_assigned_by_address(stack: Stack) -> None:
    secret = stack.gateway.app.watcher.table.rollout.sticky.secret
    for i in range(40):
        address = f"198.51.100.{i}"
        via = f"X-Forwarded-For: {address}"
        served_by, headers = await stack.ask(via)
        expected = b"c:" + sticky.value_for(secret, address)
        assert served_by == predicted(stack, expected)
        assert headers["set-cookie"].startswith(f"strangler_sticky={expected[2:].decode()};")
        assert (await stack.ask(via))[0] == served_by
        # once the cookie is kept, a new address changes nothing
        with_cookie = f"Cookie: strangler_sticky={expected[2:].decode()}"
        assert (await stack.ask(with_cookie, "X-Forwarded-For: 192.0.2.1"))[0] == served_by


async def test_routes_without_a_split_set_no_cookie(stack: Stack) -> None:
    served_by, headers = await stack.ask(path="/products")
    assert served_by == "legacy" and "set-cookie" not in headers


async def test_testers_choose_the_upstream_and_everyone_else_is_ignored(stack: Stack) -> None:
    users = [f"user-{i}" for i in range(40)]
    natural = {user: predicted(stack, f"sub:{user}".encode()) for user in users}
    assert set(natural.values()) == {"legacy", "search"}
    for user in users:
        for target in ("search", "legacy"):
            header = f"X-Strangler-Target: {target}"
            assert await stack.as_user(user, "migration-tester", extra=(header,)) == target
            assert await stack.as_user(user, "buyer", "admin", extra=(header,)) == natural[user]
    anonymous, _ = await stack.ask("X-Strangler-Target: search", "X-Forwarded-For: 192.0.2.7")
    assert anonymous == predicted(
        stack,
        b"c:"
        + sticky.value_for(stack.gateway.app.watcher.table.rollout.sticky.secret, "192.0.2.7"),
    )
    for recorder in (stack.legacy, stack.search):
        assert not seen(recorder, "x-strangler-target")  # never reaches an upstream
    stats = stack.gateway.app.gateway.assigner.stats["search"]
    assert stats.overrides == {"search": 40, "legacy": 40}
    assert stats.overrides_ignored == 81


async def test_an_allowed_override_to_an_unknown_target_is_a_400(stack: Stack) -> None:
    tester = f"Authorization: Bearer {token('tess', 'migration-tester')}"
    for path, target in (("/search", "nope"), ("/products", "search"), ("/health", "search")):
        response = await raw_request(
            stack.gateway.port, get(path, tester, f"X-Strangler-Target: {target}")
        )
        assert response.status == 400
        body = response.json()
        assert body["error"] == "bad_target" and repr(target) in body["detail"]
        assert "choose one of" in body["detail"]
    ignored = await raw_request(
        stack.gateway.port,
        get(
            "/search", f"Authorization: Bearer {token('bob', 'buyer')}", "X-Strangler-Target: nope"
        ),
    )
    assert ignored.status == 200  # not allowed to choose: the header is just ignored


async def test_without_a_policy_nobody_overrides(stack: Stack) -> None:
    stack.write(100, 1, authz="none")
    stack.reload()
    tester = f"Authorization: Bearer {token('tess', 'migration-tester')}"
    users = [f"user-{i}" for i in range(10)]
    for user in users:
        header = f"Authorization: Bearer {token(user, 'migration-tester')}"
        served_by, _ = await stack.ask(header, "X-Strangler-Target: search")
        assert served_by == predicted(stack, f"sub:{user}".encode())
    assert (await stack.ask(tester, "X-Strangler-Target: nope"))[0] in ("legacy", "search")


async def test_a_canary_keeps_comparing_what_the_monolith_answers(tmp_path: Path) -> None:
    async with serve_upstream("legacy") as legacy, serve_upstream("search") as search:
        routes = tmp_path / "routes.yaml"
        write(routes, legacy, search, (50, 50), "none")
        text = routes.read_text().replace(
            "    upstream: {legacy: 50, search: 50}\n",
            "    upstream: {legacy: 50, search: 50}\n    shadow: {upstream: search}\n",
        )
        routes.write_text(text)
        async with serve_gateway(routes) as gw:
            stack = Stack(gw, legacy, search, routes)
            served = [await stack.as_user(f"user-{i}") for i in range(40)]
            await gw.app.mirror.drain()
            assert gw.app.mirror.stats["search"].mirrored == served.count("legacy") > 0
            mirrored = [r for r in search.seen if r.header("x-strangler-shadow")]
            assert len(mirrored) == served.count("legacy")  # the candidate's own: not again
