"""`strangler gateway serve`: the gateway on uvicorn, one worker."""

from __future__ import annotations

import argparse
import logging
import sys

from common.validation import ConfigError
from gateway.config.settings import Settings
from gateway.http.shutdown import DEFAULT_SHUTDOWN_TIMEOUT, sigterm_exits_zero


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
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
