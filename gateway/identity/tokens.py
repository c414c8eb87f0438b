"""JWT authentication: verify a bearer token against configured keys (PyJWT).

Rules (RFC 8725, JWT best current practices):
- each key is used with exactly one algorithm, its own; the token's `alg` must equal it, so
  an RSA public key can never be used as an HMAC secret (CVE-2022-29217) and `none` never
  verifies anything;
- `exp` is always required; `iss` and `aud` are checked by exact match when configured;
  `nbf` and `iat` are checked with the configured leeway;
- a `crit` header is rejected: the gateway implements no JWS extensions (RFC 7515 4.1.11);
- JWKS keys are fetched asynchronously (httpx), cached for `cache` seconds and refreshed in
  the background; an unknown `kid` triggers at most one fetch per `min_refresh` seconds (a
  flood of random kids costs one fetch, not one per request); a failed fetch (no answer
  within `timeout` seconds in all, an error status, a body that is not a JWKS) is logged and
  keeps the last good keys until they expire.

Verified tokens are cached (bounded, until their `exp`); revocation (a `jti` denylist behind
the `RevocationStore` port) is checked on every request, cached or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import jwt

from gateway.config.access import AuthSettings, JwksSource, StaticKey

log = logging.getLogger("strangler.tokens")


class InvalidToken(Exception):
    """The token is missing, malformed, or failed verification; the client gets 401."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    roles: tuple[str, ...]
    claims: Mapping[str, Any]
    jti: str | None
    exp: float


class RevocationStore(Protocol):
    """The `jti` denylist port (in memory here; Redis in gateway.limits.revocations)."""

    async def is_revoked(self, jti: str) -> bool: ...

    async def revoke(self, jti: str, until: float) -> None: ...


@dataclass
class InMemoryRevocations:
    """One replica's denylist; entries are dropped once the token would have expired."""

    clock: Callable[[], float] = time.time
    _until: dict[str, float] = field(default_factory=dict)

    async def is_revoked(self, jti: str) -> bool:
        until = self._until.get(jti)
        if until is None:
            return False
        if until <= self.clock():  # as Redis's PXAT: gone at the instant itself
            del self._until[jti]
            return False
        return True

    async def revoke(self, jti: str, until: float) -> None:
        self._until[jti] = until


class _FetchFailed(Exception):
    """A JWKS fetch gave no keys; logged, and the last good keys stay."""


class JwksKeys:
    """Keys from a JWKS URL, fetched off the request path and kept while fresh."""

    def __init__(self, source: JwksSource, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self.fetches = 0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._expires = 0.0
        self._last_attempt = -float("inf")
        self._inflight: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._http is not None:
            await self._http.aclose()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.source.cache / 2, self.source.min_refresh))
            await self.refresh()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        if self._refresher is None:  # started by the first token, inside the running loop
            self._refresher = asyncio.create_task(self._refresh_loop())
        now = self.clock()
        if kid not in self._keys and now - self._last_attempt >= self.source.min_refresh:
            await self.refresh()  # an unknown kid: maybe a rotation; once per interval
        if self.clock() >= self._expires:
            return None  # JWKS down past the keys' lifetime: nothing verifies
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """One fetch at a time: concurrent callers wait for the fetch in flight."""
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
        task = self._inflight
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._inflight = None

    async def _fetch(self) -> None:
        self._last_attempt = self.clock()
        self.fetches += 1
        try:
            keys = _jwks_keys(await self._download(), self.source.algorithms)
        except _FetchFailed as exc:
            log.warning(
                "JWKS refresh from %s failed, keeping the last keys: %s", self.source.url, exc
            )
            return
        self._keys = keys
        self._expires = self.clock() + self.source.cache

    async def _download(self) -> Any:
        """The JWKS URL's JSON document; every way that fails, as _FetchFailed saying which."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.source.timeout,
                # An IdP may move its keys (the old URL redirecting); certificates are still
                # checked on every hop.
                follow_redirects=True,
                # The system's CAs (an IdP behind a company CA), not httpx's certifi bundle;
                # no proxy from the environment: the routes file alone says where keys are.
                verify=ssl.create_default_context(),
                trust_env=False,
            )
        try:
            # httpx bounds each phase (connect, each read); `timeout` bounds the whole fetch.
            async with asyncio.timeout(self.source.timeout):
                response = await self._http.get(self.source.url)
        except TimeoutError:
            raise _FetchFailed(f"no answer within {self.source.timeout:g}s") from None
        except httpx.HTTPError as exc:  # refused, reset, an httpx timeout, too many redirects
            raise _FetchFailed(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise _FetchFailed(f"answered {response.status_code} {response.reason_phrase}")
        try:
            return response.json()
        except ValueError as exc:  # not JSON, or not in the charset it declares
            raise _FetchFailed(f"the answer is not JSON: {exc}") from exc


def _jwks_keys(document: Any, algorithms: frozenset[str]) -> dict[str, jwt.PyJWK]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchFailed("the answer is not a JWKS document (no `keys` list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or "kid" not in entry or entry.get("use", "sig") != "sig":
            continue
        algorithm = entry.get("alg")
        if algorithm not in algorithms:
            continue  # a key is used with its one declared, allowed algorithm or not at all
        with contextlib.suppress(jwt.PyJWTError):
            keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm)
    return keys


# Verified tokens are cached only up to this length, so that the cache is bounded in bytes
# (cache_size x 8 KiB: 80 MB at the default 10,000); a longer token is verified every time.
MAX_CACHED_TOKEN = 8192


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        revocations: RevocationStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.revocations = revocations
        self.clock = clock
        self.jwks = JwksKeys(settings.jwks) if settings.jwks else None
        self._by_kid = {k.id: k for k in settings.keys}
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self.verifications = 0  # tokens verified cryptographically (cache misses)

    async def close(self) -> None:
        if self.jwks is not None:
            await self.jwks.close()

    async def authenticate(self, token: str) -> Identity:
        identity = self._cache.get(token)
        if identity is not None and identity.exp > self.clock():
            self._cache.move_to_end(token)
        else:
            identity = await self._verify(token)
            if self.settings.cache_size and len(token) <= MAX_CACHED_TOKEN:
                self._cache[token] = identity
                if len(self._cache) > self.settings.cache_size:
                    self._cache.popitem(last=False)
        if identity.jti is not None and await self.revocations.is_revoked(identity.jti):
            raise InvalidToken("the token has been revoked")
        return identity

    async def _verify(self, token: str) -> Identity:
        self.verifications += 1
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:  # PyJWT also refuses unsupported `crit` extensions here
            raise InvalidToken(f"the token is malformed: {exc}") from exc
        if "crit" in header:
            raise InvalidToken("the token has critical header extensions (crit) not supported")
        algorithm = header.get("alg")
        key, key_algorithm = await self._key(header.get("kid"), algorithm)
        settings = self.settings
        required = ["exp"]
        required += ["iss"] if settings.issuer else []
        required += ["aud"] if settings.audience else []
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key_algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": required, "verify_aud": settings.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("the token's signature or claims are invalid") from exc
        return _identity(claims, settings.roles_claim)

    async def _key(self, kid: Any, algorithm: Any) -> tuple[Any, str]:
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise InvalidToken("the token's algorithm is not accepted")
        if kid is not None:
            if not isinstance(kid, str):
                raise InvalidToken("the token's kid is malformed")
            static = self._by_kid.get(kid)
            if static is not None:
                return self._static(static, algorithm)
            if self.jwks is not None:
                jwk = await self.jwks.get(kid)
                if jwk is not None and jwk.algorithm_name == algorithm:
                    return jwk.key, algorithm
            raise InvalidToken("no key for the token's kid")
        candidates = [k for k in self.settings.keys if k.algorithm == algorithm]
        if len(candidates) != 1:
            raise InvalidToken("the token names no kid and no single key fits its algorithm")
        return self._static(candidates[0], algorithm)

    @staticmethod
    def _static(key: StaticKey, algorithm: str) -> tuple[Any, str]:
        if key.algorithm != algorithm:
            raise InvalidToken("the token's algorithm does not match its key")
        return key.material, key.algorithm


def _identity(claims: dict[str, Any], roles_claim: str) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or not _header_safe(sub):
        raise InvalidToken("the token's sub claim is missing or not usable")
    raw_roles = claims.get(roles_claim, [])
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.replace(",", " ").split()
    if not isinstance(raw_roles, list) or not all(
        isinstance(r, str) and r and _header_safe(r) and "," not in r for r in raw_roles
    ):
        raise InvalidToken(f"the token's {roles_claim} claim is not a list of role names")
    jti = claims.get("jti")
    return Identity(
        sub=sub,
        roles=tuple(raw_roles),
        claims=claims,
        jti=jti if isinstance(jti, str) else None,
        exp=float(claims["exp"]),
    )


def _header_safe(value: str) -> bool:
    """Visible ASCII and spaces only: the value is sent upstream as a header."""
    return value.isascii() and value.isprintable() and value.strip() == value


def mint(key: StaticKey, sub: str, roles: list[str], ttl: float, **claims: Any) -> str:
    """A token signed with `key` (the development key: `strangler token`); its random jti
    is what `strangler token revoke` denies."""
    now = int(time.time())
    payload = {
        "sub": sub,
        "roles": roles,
        "iat": now,
        "exp": now + int(ttl),
        "jti": secrets.token_hex(16),
        **claims,
    }
    return jwt.encode(payload, key.material, algorithm=key.algorithm, headers={"kid": key.id})
