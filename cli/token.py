"""`strangler token` (DEVELOPMENT ONLY: mint a token with the routes file's dev key) and
`strangler token revoke` (deny a token on every replica, through the shared store)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from typing import Any

import jwt

from cli.table import load_table
from common.validation import parse_duration
from gateway.base.errors import StoreUnavailable
from gateway.config.limits import StoreSettings
from gateway.config.settings import Settings
from gateway.identity import tokens


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    token = sub.add_parser(
        "token", help="DEVELOPMENT ONLY: mint a token with the dev key from routes.yaml"
    )
    token.add_argument("--sub", help="the user (sent upstream as X-User-Id); required to mint")
    token.add_argument("--roles", default="", help="comma-separated, e.g. admin,buyer")
    token.add_argument("--ttl", type=parse_duration, default=3600.0, help="e.g. 15m, 1h")
    token.add_argument("--routes", default=settings.routes)
    token.set_defaults(handler=mint_token)

    token_sub = token.add_subparsers(dest="token_command")
    revoke = token_sub.add_parser(
        "revoke",
        help="deny a token from now on, on every replica (needs store: {backend: redis})",
    )
    revoke.add_argument("jti", nargs="?", help="the token's jti claim (with --ttl)")
    revoke.add_argument("--token", help="the token itself: its jti and exp are read from it")
    revoke.add_argument(
        "--ttl", type=parse_duration, help="with a jti: how long to deny it (the token's lifetime)"
    )
    revoke.add_argument(
        "--routes", default=settings.routes, help="the routes file naming the store"
    )
    revoke.set_defaults(handler=revoke_token)


def mint_token(ns: argparse.Namespace) -> int:
    if os.environ.get("STRANGLER_ENV") == "production":
        print(
            "strangler token is for development; refused with STRANGLER_ENV=production",
            file=sys.stderr,
        )
        return 1
    if ns.sub is None:
        print("strangler token: --sub is required to mint a token", file=sys.stderr)
        return 2
    table = load_table(ns.routes)
    if table is None:
        return 1
    dev = [k for k in table.auth.keys if k.dev]
    if not dev:
        print(f"{ns.routes}: no auth key is marked dev: true", file=sys.stderr)
        return 1
    roles = [r for r in ns.roles.split(",") if r]
    claims = {k: v for k, v in (("iss", table.auth.issuer), ("aud", table.auth.audience)) if v}
    print(tokens.mint(dev[0], ns.sub, roles, ns.ttl, **claims))
    return 0


_COMMAND_TIMEOUT = 5.0  # seconds: `strangler token revoke`'s store timeout, at the least


def revoke_token(ns: argparse.Namespace) -> int:
    table = load_table(ns.routes)
    if table is None:
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
    # Imported here, not with every command: they load redis-py.
    from gateway.limits.revocations import RedisRevocations
    from gateway.limits.store import RedisStore, StoreHealth

    # `timeout` is sized for the request path; a person running a command can wait seconds
    # (a loaded Redis or machine must not make a revocation fail).
    command = dataclasses.replace(settings, timeout=max(settings.timeout, _COMMAND_TIMEOUT))
    store = RedisStore(command, StoreHealth("redis"))
    try:
        await RedisRevocations(store).revoke(jti, until)
    finally:
        await store.close()
