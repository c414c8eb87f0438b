"""`strangler token` (DEVELOPMENT ONLY: mint a token with the routes file's dev key) and
`strangler token revoke` (deny a token on every replica, through the shared store)."""

from __future__ import annotations

import argparse
import os
import sys

from cli.table import load_table
from common.validation import parse_duration
from gateway.config.settings import Settings
from gateway.identity import revocations, tokens


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
    revoke.set_defaults(handler=revocations.revoke_token)


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
