"""The gateway for ``bench proxy --breakdown``, with layers that have no switch taken out.

    python -m bench.breakdown_gateway [--off metrics,resilience] [gateway serve's arguments]

The access log, limits, shadow, read-your-writes and auth are turned off the way an operator
would (``--no-access-log``, routes.yaml). The traffic counters and the resilience rules have
no off switch, and production should not grow one for a benchmark, so this launcher builds
the app as ``strangler gateway serve`` does (gateway/app.py, the composition root) and then
swaps null collaborators into the request pipeline:

- ``metrics``: the record stage's monitor counts nothing (`Uncounted`); /metrics still
  answers, from the app's own monitor, which no request reaches.
- ``resilience``: the forward stage asks the upstream's pool directly (`DirectExchange`):
  no in-flight caps, breaker, retries or deadline beyond the pool's own timeouts.
- ``comparisons`` (for ``bench shadow --separate``): the shadow worker process is
  `bench.shadow_sink`, which acknowledges every copy and compares nothing.

One worker, as ``gateway serve``; a bench-only module (bench/ is not shipped as a feature).
"""

from __future__ import annotations

# First, as cli/__init__.py does: which C++ allocator regopy shares (issue #16).
import gateway.identity.rego  # noqa: F401

# isort: split
import argparse
import logging
import sys
from collections.abc import AsyncIterator, Iterable

from bench.errors import BenchError
from cli import gateway as gateway_cli
from common.validation import ConfigError
from gateway.app import GatewayApp
from gateway.config.routes import Route, Upstream
from gateway.config.settings import Settings
from gateway.http.accesslog import AccessLog
from gateway.http.shutdown import sigterm_exits_zero
from gateway.identity.guard import Access
from gateway.observe.monitor import Monitor
from gateway.request.client import Pool, Response
from gateway.request.context import RequestContext
from gateway.resilience.exchange import Resilience
from gateway.shadow.worker import WorkerMirror

SWAPPABLE = ("metrics", "resilience", "comparisons")


class Uncounted(Monitor):
    """The monitor whose per-request count does nothing: the metrics layer taken out."""

    def count(
        self,
        route: Route | None,
        upstream: Upstream | None,
        status: int,
        seconds: float,
        access: Access | None,
    ) -> None:
        return None


class DirectExchange(Resilience):
    """The exchange without its rules: one request on the pool, as the pool's timeouts say."""

    async def exchange(
        self,
        pool: Pool,
        ctx: RequestContext,
        body: AsyncIterator[bytes] | None,
        length: int | None,
    ) -> Response:
        return await pool.request(ctx.method, ctx.target, ctx.headers, body, length)


def build(
    routes: str,
    off: Iterable[str],
    reload_interval: float = 1.0,
    access_log: AccessLog | None = None,
) -> GatewayApp:
    """The app `gateway serve` builds, with the layers in `off` (of SWAPPABLE) taken out."""
    app = GatewayApp(routes, reload_interval=reload_interval, access_log=access_log)
    off = set(off)
    if "metrics" in off:
        monitor = app.monitor
        app.gateway.record.monitor = Uncounted(
            monitor.traffic, monitor.metrics, monitor.dashboard, monitor.cdc
        )
    if "resilience" in off:
        app.gateway.forward.resilience = DirectExchange()
    if "comparisons" in off:
        if not isinstance(app.mirror, WorkerMirror):
            raise BenchError("comparisons: the sink stands in for a worker process (mode: process)")
        app.mirror.command = [sys.executable, "-m", "bench.shadow_sink"]
    return app


def _layers(text: str) -> frozenset[str]:
    layers = frozenset(name for name in text.split(",") if name)
    unknown = layers - set(SWAPPABLE)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown layer(s) {', '.join(sorted(unknown))}; known: {', '.join(SWAPPABLE)}"
        )
    return layers


def _serve_arguments(argv: list[str]) -> argparse.Namespace:
    """`gateway serve`'s own parser (cli/gateway.py), so the options cannot drift apart."""
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown_gateway")
    gateway_cli.register(parser.add_subparsers(dest="command"), Settings.from_env())
    return parser.parse_args(["gateway", "serve", *argv])


@sigterm_exits_zero()
def serve(ns: argparse.Namespace, off: frozenset[str]) -> int:
    """cli/gateway.py's gateway_serve with `build` for the app (one worker)."""
    import uvicorn

    from gateway.http import server as edge

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access_log = None if ns.no_access_log else AccessLog(sys.stderr.buffer)
    try:
        app = build(ns.routes, off, ns.reload_interval, access_log)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    config = edge.config(app, lambda: app.watcher.table.edge, **gateway_cli.uvicorn_options(ns))
    uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.breakdown_gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--off", type=_layers, default=frozenset(), help=f"comma-separated: {','.join(SWAPPABLE)}"
    )
    own, rest = parser.parse_known_args(argv)
    return serve(_serve_arguments(rest), own.off)


if __name__ == "__main__":
    raise SystemExit(main())
