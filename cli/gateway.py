"""`strangler gateway serve`: the gateway on uvicorn, one worker or several
(`--workers N`: forked by gateway/http/workers.py, sharing one listening socket)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from common.validation import ConfigError
from gateway.config.settings import Settings
from gateway.http.shutdown import DEFAULT_SHUTDOWN_TIMEOUT, sigterm_exits_zero
from gateway.observe.siblings import WorkerSlot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: Settings) -> None:
    gateway = sub.add_parser("gateway", help="run the gateway")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True)
    serve = gateway_sub.add_parser("serve", help="serve HTTP with uvicorn")
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
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes on one port (default 1); more than one needs "
        "store: {backend: redis} for rate limits, idempotency keys and read-your-writes",
    )
    serve.set_defaults(handler=gateway_serve)


def gateway_serve(ns: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if (ns.certfile is None) != (ns.keyfile is None):
        print("--certfile and --keyfile go together", file=sys.stderr)
        return 2
    if ns.workers < 1:
        print("--workers needs 1 or more", file=sys.stderr)
        return 2
    if ns.workers == 1:
        return _serve(ns)
    return _supervise(ns)


def _supervise(ns: argparse.Namespace) -> int:
    """Check the table, bind the port, fork the workers (gateway/http/workers.py)."""
    import uvicorn  # noqa: F401  (imported before the fork: a worker starts in milliseconds)

    import gateway.app  # noqa: F401
    from gateway.config.table import load, require_shared_store
    from gateway.http import workers

    try:  # refused here once rather than by every worker in a crash loop
        require_shared_store(load(ns.routes), ns.workers)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        sock = workers.bind(ns.host, ns.port)
    except OSError as exc:
        print(f"cannot listen on {ns.host}:{ns.port}: {exc.strerror}", file=sys.stderr)
        return 1
    with sock:
        return workers.Supervisor(ns.workers, lambda slot: _serve(ns, slot, sock)).run()


@sigterm_exits_zero()
def _serve(
    ns: argparse.Namespace, worker: WorkerSlot | None = None, sock: socket.socket | None = None
) -> int:
    """One server: the only one, or a forked worker on the parent's socket."""
    import uvicorn

    from gateway.app import GatewayApp
    from gateway.http import server as edge
    from gateway.http.accesslog import AccessLog
    from gateway.http.workers import stderr_lines

    access_log = None
    if not ns.no_access_log:
        access_log = AccessLog(sys.stderr.buffer if worker is None else stderr_lines())
    try:
        app = GatewayApp(
            ns.routes, reload_interval=ns.reload_interval, access_log=access_log, worker=worker
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    config = edge.config(app, lambda: app.watcher.table.edge, **uvicorn_options(ns))
    uvicorn.Server(config).run(sockets=None if sock is None else [sock])
    return 0


def uvicorn_options(ns: argparse.Namespace) -> dict[str, object]:
    """uvicorn's options as `gateway serve`'s arguments set them (for gateway.http.server's
    config)."""
    return {
        "host": ns.host,
        "port": ns.port,
        "loop": "uvloop",
        "log_config": None,
        "ssl_certfile": ns.certfile,
        "ssl_keyfile": ns.keyfile,
        "timeout_graceful_shutdown": ns.shutdown_timeout,
    }
