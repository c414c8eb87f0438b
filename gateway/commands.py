"""The gateway's own subcommands: `routes check`, `gateway serve`, `demo`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from gateway import config
from gateway.settings import Settings
from gateway.validation import ConfigError


def register(sub: Any) -> None:
    settings = Settings.from_env()

    routes = sub.add_parser("routes", help="inspect the migration map")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    check = routes_sub.add_parser(
        "check", help="validate a routes file; print the resolved table or every error"
    )
    check.add_argument("file", nargs="?", default=settings.routes)
    check.set_defaults(handler=routes_check)

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
    serve.set_defaults(handler=gateway_serve)

    demo = sub.add_parser("demo", help="walk through moving /search from the monolith")
    demo.add_argument("--check", action="store_true", help="verify every step and exit")
    demo.add_argument("--workdir", help="where the databases and routes.yaml go (default: temp)")
    demo.add_argument("--gateway-port", type=int, default=0, help="0 picks a free port")
    demo.add_argument("--legacy-port", type=int, default=0)
    demo.add_argument("--search-port", type=int, default=0)
    demo.set_defaults(handler=run_demo)


def routes_check(ns: argparse.Namespace) -> int:
    try:
        table = config.load(ns.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{table.source}: OK, version {table.version}")
    rows = [("ROUTE", "PATH", "METHODS", "UPSTREAM", "FORWARDS TO")]
    for route in table.routes:
        upstream = table.upstreams[route.upstream]
        target = upstream.url + (route.rewrite or route.path)
        methods = ",".join(sorted(route.methods)) if route.methods else "*"
        rows.append((route.name, route.path, methods, route.upstream, target))
    if table.default:
        rows.append(("(default)", "/", "*", table.default, table.upstreams[table.default].url))
    else:
        rows.append(("(default)", "/", "*", "-", "404 no_route"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]))
    return 0


def gateway_serve(ns: argparse.Namespace) -> int:
    import uvicorn

    from gateway.accesslog import AccessLog
    from gateway.app import GatewayApp

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access_log = None if ns.no_access_log else AccessLog(sys.stderr.buffer)
    try:
        app = GatewayApp(ns.routes, reload_interval=ns.reload_interval, access_log=access_log)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    uvicorn.run(
        app,
        host=ns.host,
        port=ns.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # the gateway writes its own structured line
        proxy_headers=False,  # the gateway decides which forwarded headers to trust
        server_header=False,  # the upstream's Server and Date headers pass through
        date_header=False,
        log_config=None,
    )
    return 0


def run_demo(ns: argparse.Namespace) -> int:
    from gateway.demo import Demo

    return Demo(
        workdir=ns.workdir,
        gateway_port=ns.gateway_port,
        legacy_port=ns.legacy_port,
        search_port=ns.search_port,
    ).run(check=ns.check)
