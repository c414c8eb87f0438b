"""Revoked tokens in Redis, and what `strangler token revoke` runs (cli/token.py parses it).

The denylist holds a token's `jti` until the token would have expired anyway (its `exp`
plus the routes file's leeway), so it never grows past the tokens still in circulation.
In Redis the entry expires by itself (`SET ... PXAT`), and every replica sees it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import sys
import time
from typing import TYPE_CHECKING, Any

import jwt

from common.validation import ConfigError
from gateway.config import table as config
from gateway.config.limits import StoreSettings
from gateway.errors import StoreUnavailable

if TYPE_CHECKING:  # redis-py is imported when a store is opened, not with every command
    from gateway.limits.store import RedisStore

_COMMAND_TIMEOUT = 5.0  # seconds: `strangler token revoke`'s store timeout, at the least


class RedisRevocations:
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def _name(self, jti: str) -> str:
        return self.store.key("revoked", hashlib.blake2b(jti.encode(), digest_size=16).hexdigest())

    async def is_revoked(self, jti: str) -> bool:
        name = self._name(jti)
        found: int = await self.store.run("revocation", lambda client: client.exists(name))
        return bool(found)

    async def revoke(self, jti: str, until: float) -> None:
        if until <= time.time():
            return  # already expired: no verifier accepts it
        name = self._name(jti)
        at = round(until * 1000)
        await self.store.run("revocation", lambda client: client.set(name, b"1", pxat=at))


def revoke_token(ns: argparse.Namespace) -> int:
    try:
        table = config.load(ns.routes)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if table.store.backend != "redis":
        print(
            f"{ns.routes}: the store is in memory, inside each gateway process; revoking needs "
            "store: {backend: redis, url: ...}",
            file=sys.stderr,
        )
        return 1
    try:
        jti, until = _what(ns, table.auth.leeway)
    except ValueError as exc:
        print(f"strangler token revoke: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_revoke(table.store, jti, until))
    except StoreUnavailable as exc:
        print(f"strangler token revoke: {exc.detail}", file=sys.stderr)
        return 1
    print(f"revoked {jti} until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(until))}")
    return 0


def _what(ns: argparse.Namespace, leeway: float) -> tuple[str, float]:
    """(jti, until) from either a token or a jti and a ttl."""
    if (ns.token is None) == (ns.jti is None):
        raise ValueError("give either a jti (with --ttl) or --token")
    if ns.token is not None:
        # Not verified: denying a token is safe whoever signed it, and its exp bounds the entry.
        try:
            claims: dict[str, Any] = jwt.decode(ns.token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"not a token: {exc}") from None
        if not isinstance(claims.get("jti"), str) or not isinstance(claims.get("exp"), int):
            raise ValueError("the token has no jti or no exp: it cannot be revoked by id")
        return claims["jti"], claims["exp"] + leeway
    if ns.ttl is None:
        raise ValueError("with a jti, say how long to deny it: --ttl (e.g. 1h)")
    return ns.jti, time.time() + ns.ttl


async def _revoke(settings: StoreSettings, jti: str, until: float) -> None:
    from gateway.limits.store import RedisStore, StoreHealth

    # `timeout` is sized for the request path; a person running a command can wait seconds
    # (a loaded Redis or machine must not make a revocation fail).
    command = dataclasses.replace(settings, timeout=max(settings.timeout, _COMMAND_TIMEOUT))
    store = RedisStore(command, StoreHealth("redis"))
    try:
        await RedisRevocations(store).revoke(jti, until)
    finally:
        await store.close()
