"""The gateway's own subcommands: `routes check`, `gateway serve`, `demo`.

`routes diff | promote | rollback` are cli/routes.py's."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from cli import routes as rollout_commands
from common.validation import ConfigError, parse_duration
from gateway.config import table as config
from gateway.config.settings import Settings
from gateway.config.shadow import SAFE_METHODS
from gateway.http.shutdown import DEFAULT_SHUTDOWN_TIMEOUT, sigterm_exits_zero
from gateway.identity import revocations, tokens


def register(sub: Any) -> None:
    settings = Settings.from_env()

    routes = sub.add_parser("routes", help="inspect the migration map")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    check = routes_sub.add_parser(
        "check", help="validate a routes file; print the resolved table or every error"
    )
    check.add_argument("file", nargs="?", default=settings.routes)
    check.set_defaults(handler=routes_check)
    rollout_commands.register(routes_sub, settings.routes)

    gateway = sub.add_parser("gateway", help="run the gateway")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True)
    serve = gateway_sub.add_parser("serve", help="serve HTTP with uvicorn (one worker)")
    serve.add_argument("--routes", default=settings.routes, help="routes.yaml to serve and watch")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=settings.reload_interval,
        help="seconds between checks of the routes file (0: never)",
    )
    serve.add_argument("--no-access-log", action="store_true", default=not settings.access_log)
    serve.add_argument("--certfile", help="serve HTTPS with this certificate (PEM chain)")
    serve.add_argument("--keyfile", help="... and this private key")
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may finish before they are cancelled "
        f"(default {DEFAULT_SHUTDOWN_TIMEOUT:.0f}, within Kubernetes' 30 s grace period)",
    )
    serve.set_defaults(handler=gateway_serve)

    token = sub.add_parser(
        "token", help="DEVELOPMENT ONLY: mint a token with the dev key from routes.yaml"
    )
    token.add_argument("--sub", help="the user (sent upstream as X-User-Id); required to mint")
    token.add_argument("--roles", default="", help="comma-separated, e.g. admin,buyer")
    token.add_argument("--ttl", type=parse_duration, default=3600.0, help="e.g. 15m, 1h")
    token.add_argument("--routes", default=settings.routes)
    token.set_defaults(handler=mint_token)
    revocations.add_revoke_command(token, settings.routes)  # strangler token revoke

    shadow = sub.add_parser("shadow", help="shadow traffic results")
    shadow_sub = shadow.add_subparsers(dest="shadow_command", required=True)
    report = shadow_sub.add_parser("report", help="per route: mirrored, identical, top diffs")
    report.add_argument("--route", help="only this route")
    report.add_argument("--since", type=parse_duration, help="only the last ... (e.g. 1h)")
    report.add_argument("--routes", default=settings.routes, help="where shadow_store is set")
    report.set_defaults(handler=shadow_report)

    demo = sub.add_parser("demo", help="walk through moving /search from the monolith")
    demo.add_argument("--check", action="store_true", help="verify every step and exit")
    demo.add_argument("--workdir", help="where the databases and routes.yaml go (default: temp)")
    demo.add_argument("--gateway-port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--legacy-port", type=int, default=0)
    demo.add_argument("--search-port", type=int, default=0)
    # --- `strangler demo --against URL`: drive a running stack (demo/stack.py) ---
    demo.add_argument("--against", metavar="URL", help="a running stack's gateway, e.g. compose's")
    demo.add_argument(
        "--routes", help="the routes file that gateway reads (default: deploy/routes.compose.yaml)"
    )
    demo.add_argument("--compose", help="where secret_env values come from (default: nearest)")
    demo.add_argument("--search-url", help="the search service itself, for its --dev-toggles")
    demo.add_argument("--no-cdc", action="store_true", help="the stack has no CDC bridge")
    demo.set_defaults(handler=run_demo)


def _load(path: str) -> config.RouteTable | None:
    """The routes file's table, or None after printing every error."""
    try:
        return config.load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def routes_check(ns: argparse.Namespace) -> int:
    table = _load(ns.file)
    if table is None:
        return 1
    print(f"{table.source}: OK, version {table.version}")
    rows = [("ROUTE", "PATH", "METHODS", "AUTH", "UPSTREAM", "FORWARDS TO")]
    for route in table.routes:
        upstream = table.upstreams[route.upstream]
        target = upstream.url + (route.rewrite or route.path)
        methods = ",".join(sorted(route.methods)) if route.methods else "*"
        if route.rollout.split is not None:  # a canary: every live upstream
            target = ", ".join(
                table.upstreams[n].url + (route.rewrite or route.path)
                for n in route.rollout.split.live
            )
        rows.append(
            (route.name, route.path, methods, table.auth_mode(route), route.upstream, target)
        )
    default = table.default
    rows.append(
        (
            "(default)",
            "/",
            "*",
            table.auth.default,
            default or "-",
            table.upstreams[default].url if default else "404 no_route",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[5]]))
    print(*rollout_commands.state_lines(table), sep="\n")
    authz = table.authz
    print(f"authz: {authz.engine} ({authz.policies or authz.url})" if authz else "authz: none")
    for route in table.routes:
        if route.shadow is None:
            continue
        shadow = route.shadow
        methods = ",".join(sorted(shadow.methods))
        print(f"shadow: {route.name} -> {shadow.upstream} ({shadow.sample:.0%} of {methods})")
        if shadow.methods - SAFE_METHODS:
            print(
                f"warning: route {route.name!r} mirrors writes to {shadow.upstream!r}: the "
                "candidate must not share state with the primary, or data changes twice",
                file=sys.stderr,
            )
    lines, warnings = config.limits_summary(table)  # store, rate limits, idempotency keys
    for line in lines:
        print(line)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0


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
    table = _load(ns.routes)
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


def shadow_report(ns: argparse.Namespace) -> int:
    import asyncio
    import time

    from gateway.shadow.report import format_report
    from gateway.shadow.store import create_store

    table = _load(ns.routes)
    if table is None:
        return 1

    async def summaries() -> str:
        store = create_store(table.shadow_store.url)
        try:
            since = time.time() - ns.since if ns.since is not None else None
            return format_report(await store.summary(route=ns.route, since=since))
        finally:
            await store.close()

    print(asyncio.run(summaries()))
    return 0


@sigterm_exits_zero()
def gateway_serve(ns: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import GatewayApp
    from gateway.http import server as edge
    from gateway.http.accesslog import AccessLog

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if (ns.certfile is None) != (ns.keyfile is None):
        print("--certfile and --keyfile go together", file=sys.stderr)
        return 2
    access_log = None if ns.no_access_log else AccessLog(sys.stderr.buffer)
    try:
        app = GatewayApp(ns.routes, reload_interval=ns.reload_interval, access_log=access_log)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    server = uvicorn.Server(
        edge.config(
            app,
            lambda: app.watcher.table.edge,
            host=ns.host,
            port=ns.port,
            loop="uvloop",
            log_config=None,
            ssl_certfile=ns.certfile,
            ssl_keyfile=ns.keyfile,
            timeout_graceful_shutdown=ns.shutdown_timeout,
        )
    )
    server.run()
    return 0


def run_demo(ns: argparse.Namespace) -> int:
    from demo.walkthrough import main

    return main(ns)
