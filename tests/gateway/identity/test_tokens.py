"""JWT verification: every rejection the identity issue lists, against real keys."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from respx import MockRouter

from gateway.config.access import AuthSettings, JwksSource, StaticKey
from gateway.identity.tokens import Authenticator, InMemoryRevocations, InvalidToken, mint
from tests.support.harness import serve

pytestmark = pytest.mark.anyio

SECRET = b"s" * 32
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
HS = StaticKey("hs", "HS256", SECRET, dev=True)
RS = StaticKey("rs", "RS256", PUBLIC_PEM)


def settings(**overrides: Any) -> AuthSettings:
    base: dict[str, Any] = {
        "issuer": "https://id.shop.test",
        "audience": "shop",
        "leeway": 5.0,
        "keys": (HS, RS),
    }
    return AuthSettings(**{**base, **overrides})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "roles": ["buyer"],
        "iss": "https://id.shop.test",
        "aud": "shop",
        "iat": now,
        "exp": now + 60,
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def rs256(payload: dict[str, Any], kid: str = "rs", **headers: Any) -> str:
    return jwt.encode(payload, PRIVATE, algorithm="RS256", headers={"kid": kid, **headers})


async def reject(token: str, why: str, auth: Authenticator | None = None) -> None:
    auth = auth or Authenticator(settings(), InMemoryRevocations())
    with pytest.raises(InvalidToken) as info:
        await auth.authenticate(token)
    assert why in info.value.description


async def test_valid_rs256_and_hs256_tokens() -> None:
    auth = Authenticator(settings(), InMemoryRevocations())
    identity = await auth.authenticate(rs256(claims(roles=["buyer", "admin"])))
    assert (identity.sub, identity.roles) == ("alice", ("buyer", "admin"))
    hs = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "hs"})
    assert (await auth.authenticate(hs)).sub == "alice"


def unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


async def test_alg_none_is_rejected() -> None:
    await reject(unsigned({"alg": "none", "kid": "rs"}, claims()), "algorithm is not accepted")
    await reject(unsigned({"alg": "None"}, claims()), "algorithm is not accepted")


def hs256_with_public_key(header: dict[str, Any]) -> str:
    """What an attacker can make: an HMAC signature keyed with the (public) RSA key."""
    segments = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "typ": "JWT", **header}, claims(roles=["admin"]))
    ]
    signing_input = b".".join(segments)
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


async def test_hs256_signed_with_the_rsa_public_key_is_rejected() -> None:
    """CVE-2022-29217: the public key is known to everyone; it must never be an HMAC secret."""
    await reject(hs256_with_public_key({"kid": "rs"}), "algorithm does not match its key")
    # Without a kid, the only HS256 key is the real secret, and the signature fails.
    await reject(hs256_with_public_key({}), "signature or claims are invalid")


async def test_required_and_checked_claims() -> None:
    await reject(rs256(claims(exp=None)), "lacks the 'exp' claim")
    await reject(rs256(claims(exp=int(time.time()) - 60)), "expired")
    await reject(rs256(claims(nbf=int(time.time()) + 60)), "not valid yet")
    await reject(rs256(claims(aud="other")), "another audience")
    await reject(rs256(claims(aud=None)), "lacks the 'aud' claim")
    await reject(rs256(claims(iss="https://id.shop.test.evil")), "another issuer")
    await reject(rs256(claims(iss="https://id.shop")), "another issuer")  # no partial match
    await reject(rs256(claims(sub=None)), "sub claim")
    await reject(rs256(claims(sub="alice\r\nX-Evil: 1")), "sub claim")
    await reject(rs256(claims(roles=7)), "roles claim is not a list")
    await reject(rs256(claims(roles=["a,b"])), "roles claim is not a list")
    auth = Authenticator(settings(), InMemoryRevocations())
    spaced = await auth.authenticate(rs256(claims(roles="admin,buyer x")))
    assert spaced.roles == ("admin", "buyer", "x")  # a string of roles is split


async def test_leeway_applies_to_exp_and_nbf() -> None:
    auth = Authenticator(settings(leeway=30.0), InMemoryRevocations())
    assert await auth.authenticate(rs256(claims(exp=int(time.time()) - 10)))
    assert await auth.authenticate(rs256(claims(nbf=int(time.time()) + 10)))


async def test_unknown_crit_header_is_rejected() -> None:
    await reject(rs256(claims(), crit=["exp"], exp=1), "critical extension")
    await reject(rs256(claims(), crit=["b64"], b64=True), "ritical extension")


async def test_garbage_and_unknown_kid() -> None:
    await reject("not.a.token", "malformed")
    await reject(rs256(claims(), kid="missing"), "no key for the token's kid")


async def test_verified_token_cache_and_revocation_on_every_request() -> None:
    revocations = InMemoryRevocations()
    auth = Authenticator(settings(), revocations)
    token = rs256(claims(jti="t-1"))
    for _ in range(3):
        await auth.authenticate(token)
    assert auth.verifications == 1  # verified once, then served from the cache
    await revocations.revoke("t-1", until=time.time() + 60)
    await reject(token, "revoked", auth)


async def test_cache_is_bounded_and_expired_tokens_are_reverified() -> None:
    now = [time.time()]
    auth = Authenticator(settings(cache_size=2), InMemoryRevocations(), clock=lambda: now[0])
    tokens = [rs256(claims(sub=f"u{i}")) for i in range(3)]
    for token in tokens:
        await auth.authenticate(token)
    assert len(auth._cache) == 2
    assert auth.verifications == 3
    await auth.authenticate(tokens[2])
    assert auth.verifications == 3  # cached
    now[0] += 3600  # past the token's exp: the cache entry is not used any more
    await auth.authenticate(tokens[2])
    assert auth.verifications == 4


async def test_dev_token_minted_by_the_cli_helper_verifies() -> None:
    token = mint(HS, "bob", ["buyer"], 60, iss="https://id.shop.test", aud="shop")
    identity = await Authenticator(settings(), InMemoryRevocations()).authenticate(token)
    assert (identity.sub, identity.roles) == ("bob", ("buyer",))


JWKS_URL = "https://id.shop.test/.well-known/jwks.json"


def jwks_document(*kids: str) -> dict[str, Any]:
    """A JWKS with PRIVATE's public key under each of `kids`."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PRIVATE.public_key()))
    return {"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"} for kid in kids]}


class Jwks:
    """A loopback JWKS endpoint that counts fetches and can go down."""

    def __init__(self) -> None:
        self.fetches = 0
        self.down = False
        self.document = jwks_document("jw1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.fetches += 1
        status, body = (500, b"down") if self.down else (200, json.dumps(self.document).encode())
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def jwks_server() -> AsyncIterator[tuple[Jwks, str]]:
    app = Jwks()
    async with serve(app) as url:
        yield app, url + "/jwks.json"


@contextlib.asynccontextmanager
async def jwks_auth(url: str, **source: float) -> AsyncIterator[tuple[Authenticator, list[float]]]:
    """An authenticator with only the JWKS at `url`, and its keys' clock, set by the test."""
    jwks = JwksSource(url, frozenset({"RS256"}), **source)
    auth = Authenticator(settings(keys=(), jwks=jwks), InMemoryRevocations())
    assert auth.jwks is not None
    now = [1000.0]
    auth.jwks.clock = lambda: now[0]
    try:
        yield auth, now
    finally:
        await auth.close()


async def test_jwks_unknown_kid_flood_costs_one_fetch_per_interval() -> None:
    async with (
        jwks_server() as (server, url),
        jwks_auth(url, cache=600, min_refresh=30) as (auth, now),
    ):
        assert (await auth.authenticate(rs256(claims(), kid="jw1"))).sub == "alice"
        assert server.fetches == 1
        now[0] += 31
        for i in range(50):
            await reject(rs256(claims(), kid=f"random-{i}"), "no key", auth)
        assert server.fetches == 2  # one refresh for the whole flood
        now[0] += 29
        await reject(rs256(claims(), kid="random-again"), "no key", auth)
        assert server.fetches == 2  # still inside the interval
        now[0] += 2
        await reject(rs256(claims(), kid="random-later"), "no key", auth)
        assert server.fetches == 3


async def test_jwks_down_keeps_last_keys_until_they_expire() -> None:
    async with (
        jwks_server() as (server, url),
        jwks_auth(url, cache=100, min_refresh=10) as (auth, now),
    ):
        assert auth.jwks is not None
        assert await auth.authenticate(rs256(claims(sub="a"), kid="jw1"))
        server.down = True
        now[0] += 50
        await auth.jwks.refresh()  # fails: the last keys stay
        assert await auth.authenticate(rs256(claims(sub="b"), kid="jw1"))
        now[0] += 60  # past the keys' lifetime, JWKS still down
        await reject(rs256(claims(sub="c"), kid="jw1"), "no key", auth)


async def test_jwks_keys_with_other_algorithms_are_ignored() -> None:
    async with jwks_server() as (server, url), jwks_auth(url) as (auth, _):
        server.document["keys"][0]["alg"] = "RS512"
        await reject(rs256(claims(), kid="jw1"), "no key", auth)


# The fetch itself (httpx), with the network mocked by respx.


async def test_jwks_is_fetched_once_and_kept_for_its_cache_time(respx_mock: MockRouter) -> None:
    route = respx_mock.get(JWKS_URL).respond(json=jwks_document("jw1"))
    async with jwks_auth(JWKS_URL, cache=100) as (auth, now):
        assert auth.jwks is not None
        assert (await auth.authenticate(rs256(claims(sub="a"), kid="jw1"))).sub == "a"
        now[0] += 99
        assert (await auth.authenticate(rs256(claims(sub="b"), kid="jw1"))).sub == "b"
        assert route.call_count == 1
        now[0] += 2  # past `cache` with no refresh: nothing verifies against stale keys
        await reject(rs256(claims(sub="c"), kid="jw1"), "no key", auth)
        await auth.jwks.refresh()  # what the background refresh does
        assert (await auth.authenticate(rs256(claims(sub="d"), kid="jw1"))).sub == "d"
        assert route.call_count == 2


async def test_an_unknown_kid_refreshes_at_most_once_per_min_refresh(
    respx_mock: MockRouter,
) -> None:
    rotated = [httpx.Response(200, json=jwks_document(*kids)) for kids in (["jw1"], ["jw2"])]
    route = respx_mock.get(JWKS_URL).mock(side_effect=rotated)
    async with jwks_auth(JWKS_URL, min_refresh=30) as (auth, now):
        assert await auth.authenticate(rs256(claims(sub="a"), kid="jw1"))
        now[0] += 29  # the IdP rotates to jw2 now, within min_refresh of the last fetch
        await reject(rs256(claims(sub="b"), kid="jw2"), "no key", auth)
        await reject(rs256(claims(sub="c"), kid="jw2"), "no key", auth)
        assert route.call_count == 1
        now[0] += 1
        assert (await auth.authenticate(rs256(claims(sub="d"), kid="jw2"))).sub == "d"
        assert route.call_count == 2
        await reject(rs256(claims(sub="e"), kid="jw1"), "no key", auth)  # rotated out
        assert route.call_count == 2


async def _no_answer(request: httpx.Request) -> httpx.Response:
    await asyncio.Event().wait()  # never set: an IdP that accepts and never answers
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("failure", "logged"),
    [
        (httpx.Response(503), "answered 503 Service Unavailable"),
        (httpx.ConnectError("connection refused"), "ConnectError: connection refused"),
        (httpx.ReadTimeout("timed out"), "ReadTimeout: timed out"),
        (_no_answer, "no answer within 0.05s"),
        (httpx.Response(200, text="<html>sign in</html>"), "the answer is not JSON"),
        (httpx.Response(200, json={"keys": "jw1"}), "the answer is not a JWKS document"),
    ],
    ids=["5xx", "refused", "httpx-timeout", "total-timeout", "not-json", "not-jwks"],
)
async def test_a_failed_refresh_is_logged_and_the_last_keys_serve_until_they_expire(
    respx_mock: MockRouter, caplog: pytest.LogCaptureFixture, failure: Any, logged: str
) -> None:
    good = httpx.Response(200, json=jwks_document("jw1"))
    respx_mock.get(JWKS_URL).mock(side_effect=[good, failure])
    async with jwks_auth(JWKS_URL, cache=100, min_refresh=10, timeout=0.05) as (auth, now):
        assert auth.jwks is not None
        assert await auth.authenticate(rs256(claims(sub="a"), kid="jw1"))
        now[0] += 50
        with caplog.at_level(logging.WARNING, logger="strangler.tokens"):
            await auth.jwks.refresh()
        assert auth.jwks.fetches == 2  # respx counts no call that never answered
        assert f"JWKS refresh from {JWKS_URL} failed, keeping the last keys: {logged}" in (
            caplog.text
        )
        assert await auth.authenticate(rs256(claims(sub="b"), kid="jw1"))
        now[0] += 51  # past the last keys' lifetime
        await reject(rs256(claims(sub="c"), kid="jw1"), "no key", auth)
