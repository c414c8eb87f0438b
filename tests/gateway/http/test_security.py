"""The gateway as the front door: the security cases the identity issue lists, end to end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.http.accesslog import AccessLog
from gateway.identity.decision import Decision
from gateway.identity.embedded_policy import EmbeddedPolicy
from tests.support import ROOT
from tests.support.harness import Gateway, Recorder, get, raw_request, serve_gateway
from tests.support.opa_server import serve_opa

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"
SECRET = "test-secret-0123456789abcdef0123456789"
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def token(alg: str = "HS256", kid: str = "dev", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "alice", "roles": ["buyer"], "iss": "shop-id", "aud": "shop"}
    claims |= {"iat": now, "exp": now + 300}
    claims = {k: v for k, v in {**claims, **overrides}.items() if v is not None}
    key: Any = SECRET if alg == "HS256" else PRIVATE
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def bearer(value: str) -> str:
    return f"Authorization: Bearer {value}"


def secured_routes(tmp_path: Path, upstream_url: str, authz: str) -> Path:
    (tmp_path / "rs.pem").write_text(PUBLIC_PEM)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f'upstreams:\n  legacy: {{url: "{upstream_url}", timeout: 2s}}\ndefault: legacy\n'
        "auth:\n  default: required\n  issuer: shop-id\n  audience: shop\n  leeway: 5s\n"
        f'  keys:\n    - {{id: dev, algorithm: HS256, secret: "{SECRET}"}}\n'
        "    - {id: rs, algorithm: RS256, public_key_file: rs.pem}\n"
        f"authz: {authz}\n"
        "routes:\n"
        "  - {name: search, path: /search, upstream: legacy, auth: optional}\n"
        "  - {name: orders, path: /orders, upstream: legacy}\n"
        "  - {name: reports, path: /reports, upstream: legacy, authz_failure: open}\n"
    )
    return routes


@pytest.fixture
async def secured(upstream: Recorder, tmp_path: Path) -> AsyncIterator[Gateway]:
    shutil.copytree(POLICIES, tmp_path / "policies")
    routes = secured_routes(tmp_path, upstream.url, "{engine: embedded, policies: policies}")
    async with serve_gateway(routes) as gw:
        yield gw


async def test_public_read_anonymous_and_signed_in_identity_headers(
    secured: Gateway, upstream: Recorder
) -> None:
    anonymous = await raw_request(secured.port, get("/search?q=x", "X-User-Id: mallory"))
    assert anonymous.status == 200
    assert upstream.seen[-1].header("x-user-id") == []
    signed = await raw_request(
        secured.port,
        get(
            "/orders",
            bearer(token(roles=["buyer", "reviewer"])),
            "X-User-Id: mallory",
            "X-User-Roles: admin",
            "X-Forwarded-User: mallory",
        ),
    )
    assert signed.status == 200
    seen = upstream.seen[-1]
    assert seen.header("x-user-id") == ["alice"]
    assert seen.header("x-user-roles") == ["buyer,reviewer"]
    assert seen.header("x-forwarded-user") == []
    assert seen.header("authorization") == []  # the token stays at the gateway


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: jwt.encode({"sub": "alice", "exp": 2**40}, None, algorithm="none"), "algorithm"),
        (lambda: token(exp=None), "'exp'"),
        (lambda: token(exp=int(time.time()) - 60), "expired"),
        (lambda: token(nbf=int(time.time()) + 60), "not valid yet"),
        (lambda: token(aud="other"), "audience"),
        (lambda: token(iss="shop"), "issuer"),  # a prefix of the real issuer
        (lambda: token(iss="shop-id-evil"), "issuer"),
        (lambda: token(kid="nope"), "no key"),
        (lambda: token(alg="RS256", kid="dev"), "does not match its key"),
        (
            lambda: jwt.encode(
                {"sub": "a", "exp": 2**40},
                SECRET,
                algorithm="HS256",
                headers={"kid": "dev", "crit": ["x"], "x": 1},
            ),
            "ritical",
        ),
        (lambda: "garbage", "malformed"),
    ],
)
async def test_bad_tokens_get_401_invalid_token_without_echo(
    secured: Gateway, upstream: Recorder, make: Any, why: str
) -> None:
    bad = make()
    response = await raw_request(secured.port, get("/orders", bearer(bad)))
    assert response.status == 401
    challenge = response.header("www-authenticate") or ""
    assert challenge.startswith('Bearer realm="strangler", error="invalid_token"')
    body = response.json()
    assert body["error"] == "unauthorized" and why in body["detail"]
    assert bad not in response.body.decode() and bad not in challenge
    assert upstream.seen == []


async def test_hs256_token_signed_with_the_rsa_public_key_is_refused(secured: Gateway) -> None:
    # PyJWT itself refuses to sign with a PEM as HMAC secret: sign by hand, as an attacker would.
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rs"}).encode())
    payload = b64(json.dumps({"sub": "alice", "roles": ["admin"], "exp": 2**40}).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + b64(signature)).decode()
    response = await raw_request(secured.port, get("/orders", bearer(forged)))
    assert response.status == 401
    assert "does not match its key" in response.json()["detail"]


async def test_missing_token_on_required_route_is_401_without_error_code(secured: Gateway) -> None:
    response = await raw_request(secured.port, get(f"/orders?access_token={token()}"))
    assert response.status == 401  # a token in the query string is ignored
    assert response.header("www-authenticate") == 'Bearer realm="strangler"'


async def test_duplicate_authorization_headers_are_400(secured: Gateway) -> None:
    response = await raw_request(secured.port, get("/orders", bearer(token()), bearer(token())))
    assert (response.status, response.json()["error"]) == (400, "bad_request")


async def test_policy_denies_with_its_reason_and_case_matters(
    secured: Gateway, upstream: Recorder
) -> None:
    post = get("/products", bearer(token()), "Content-Length: 0").replace(b"GET", b"POST", 1)
    writes = await raw_request(secured.port, post)
    assert writes.status == 403 and writes.json()["error"] == "forbidden"
    assert writes.json()["detail"]
    # Paths are case-sensitive (RFC 3986 6.2.2.1): /SEARCH is not the public /search.
    assert (await raw_request(secured.port, get("/search"))).status == 200
    upper = await raw_request(secured.port, get("/SEARCH", bearer(token())))
    assert upper.status == 403
    admin = await raw_request(secured.port, get("/_strangler/routes", bearer(token())))
    assert admin.status == 403  # a buyer is not an admin
    ok = await raw_request(secured.port, get("/_strangler/routes", bearer(token(roles=["admin"]))))
    assert ok.status == 200
    assert [s.raw_path for s in upstream.seen] == ["/search"]


class RecordingPolicy:
    """Allows everything and remembers what it was asked."""

    def __init__(self) -> None:
        self.inputs: list[Mapping[str, Any]] = []

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        self.inputs.append(input)
        return Decision(allow=True)

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@pytest.mark.parametrize(
    "path",
    [
        "//admin",
        "/x//admin",
        "/search/..%2fusers",
        "/public/..%2F..%2Fadmin",
        "/api%2e/admin",
        "/p/%2e%2e/admin",
        "/admin%2F",
        "/a%5Cadmin",
        "/admin%00",
        "/admin%3Bx=y",
        "/admin;x=y",
        "/ADMIN",
        "/admin",
        "/admin.",
        "/admin/",
        "/search/../admin",
        "/%61dmin",
    ],
)
async def test_policy_sees_exactly_the_path_that_is_forwarded(
    secured: Gateway, upstream: Recorder, path: str
) -> None:
    recording = RecordingPolicy()
    secured.app.guards.get(secured.app.watcher.table).engine = recording
    response = await raw_request(secured.port, get(path + "?q=1", bearer(token())))
    if response.status == 400:
        assert response.json()["error"] == "bad_path"
        assert recording.inputs == [] and upstream.seen == []
        return
    assert response.status == 200
    (asked,) = recording.inputs
    (seen,) = upstream.seen
    assert asked["attributes"]["request"]["http"]["path"] == f"{seen.raw_path}?{seen.query}"
    assert "/".join(asked["parsed_path"]) == seen.raw_path.lstrip("/").replace("%2E", ".")
    assert ".." not in asked["parsed_path"] and "%" not in seen.raw_path.replace("%2E", "")


async def test_broken_policy_at_reload_keeps_the_old_one(
    secured: Gateway, upstream: Recorder, tmp_path: Path
) -> None:
    guard = secured.app.guards.get(secured.app.watcher.table)
    assert (await raw_request(secured.port, get("/search"))).status == 200
    (tmp_path / "policies" / "authz.rego").write_text("package strangler.authz\nallow if {")
    assert guard.reload_policy() is False
    assert isinstance(guard.policy, EmbeddedPolicy) and guard.policy.last_failure is not None
    assert (await raw_request(secured.port, get("/search?q=2"))).status == 200
    orders = await raw_request(secured.port, get("/orders", bearer(token(roles=["guest"]))))
    assert orders.status == 403  # still the old policy's decisions, not an error
    assert len(upstream.seen) == 2


@pytest.mark.parametrize("mode", ["stall", "error", "undefined", "garbage"])
async def test_opa_failures_are_403_fail_closed_and_open_where_the_route_says(
    upstream: Recorder, tmp_path: Path, mode: str
) -> None:
    async with serve_opa(POLICIES) as opa:
        opa.mode = mode  # type: ignore[assignment]
        routes = secured_routes(
            tmp_path, upstream.url, f'{{engine: opa, url: "{opa.url}", timeout: 200ms, cache: off}}'
        )
        log = io.BytesIO()
        async with serve_gateway(routes, AccessLog(log, interval=60)) as gw:
            closed = await raw_request(gw.port, get("/orders", bearer(token())))
            opened = await raw_request(gw.port, get("/reports", bearer(token())))
            opa.release.set()
    assert closed.status == 403 and closed.json()["error"] == "forbidden"
    if mode == "undefined":
        assert opened.status == 403  # undefined is a decision (deny), not a failure
    else:
        assert opened.status == 200  # authz_failure: open
    assert [s.raw_path for s in upstream.seen] == ([] if mode == "undefined" else ["/reports"])
    denied = json.loads(log.getvalue().splitlines()[0])
    assert (denied["status"], denied["user"], denied["decision"]["allow"]) == (403, "alice", False)


async def test_opa_allows_and_the_decision_is_logged(upstream: Recorder, tmp_path: Path) -> None:
    async with serve_opa(POLICIES) as opa:
        opa.decision_ids = True
        routes = secured_routes(tmp_path, upstream.url, f'{{engine: opa, url: "{opa.url}"}}')
        log = io.BytesIO()
        async with serve_gateway(routes, AccessLog(log, interval=60)) as gw:
            responses = await asyncio.gather(
                *(raw_request(gw.port, get("/orders", bearer(token()))) for _ in range(3))
            )
    assert [r.status for r in responses] == [200, 200, 200]
    line = json.loads(log.getvalue().splitlines()[0])
    assert line["user"] == "alice"
    assert line["decision"]["allow"] is True and line["decision"]["id"]
    assert line["decision"]["ms"] >= 0
