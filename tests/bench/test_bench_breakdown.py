"""`bench proxy --breakdown`'s parts: the CPU accounting, the variants' routes and commands,
and the launcher's null collaborators. The measurement itself is not timed here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench import upstream
from bench.__main__ import _parser
from bench.breakdown import (
    BARE,
    LAUNCHED,
    LAYERS,
    SHADOW_SAMPLE,
    VARIANTS,
    Variant,
    command,
    cpu_seconds,
    machine_cpu_seconds,
    parse_cpu_seconds,
    routes,
)
from bench.breakdown_gateway import DirectExchange, Uncounted, build
from bench.breakdown_gateway import main as launcher_main
from bench.process import free_port, running
from bench.proxy import AUTH_PATH, GATEWAY_HEALTH_PATH, auth_token
from gateway.app import GatewayApp
from gateway.config.table import RouteTable, load
from gateway.http import server as edge
from tests.support.harness import Recorder, get, raw_request, serve, serve_upstream, write_routes

# -- CPU accounting ---------------------------------------------------------------------------

# Burns CPU until its own clock says 0.3 s, prints that figure, then blocks on stdin.
_BURNER = """
import sys, time
while time.process_time() < 0.3:
    pass
print(time.process_time(), flush=True)
sys.stdin.read()
"""


def test_cpu_seconds_of_a_child_agree_with_its_own_clock_and_the_machines() -> None:
    argv = [sys.executable, "-c", _BURNER]
    machine = machine_cpu_seconds()
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            own = float(child.stdout.readline())
            seen = cpu_seconds(child.pid)
            machine = machine_cpu_seconds() - machine
        finally:
            child.kill()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    # The child printed after its last busy moment; /proc counts in clock ticks.
    assert own - 2 * tick <= seen <= own + 0.05
    assert machine >= own - 2 * tick  # the machine was busy at least while the child was


def test_parse_cpu_seconds_reads_utime_and_stime_after_an_awkward_name() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    before = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194304 100 0 0 0"
    after = "0 0 20 0 1 0 12345 1000000 100 " + " ".join(["0"] * 30)
    stat = f"{before} {3 * ticks} {2 * ticks} {after}"
    assert parse_cpu_seconds(stat) == 5.0


# -- the variants' routes and commands --------------------------------------------------------


def _table(tmp_path: Path, off: frozenset[str]) -> RouteTable:
    auth_token(tmp_path)  # bench.pem, which the routes name
    path = tmp_path / "routes.yaml"
    path.write_text(routes(off, 8080, tmp_path))
    return load(path)  # the project's own loader: raises ConfigError on an invalid table


def _layers_on(table: RouteTable) -> set[str]:
    """Which of routes.yaml's layers the table has on, for the benched route."""
    route = table.match(AUTH_PATH, "GET")
    assert route is not None and route.upstream == "backend"
    on = set()
    if table.auth.default == "required" and table.authz is not None:
        on.add("auth")
    if route.limits is not None and route.limits.rate_limit is not None:
        on.add("limits")
    if route.shadow is not None and route.shadow.sample == SHADOW_SAMPLE:
        on.add("shadow")
    ryw = table.read_your_writes
    if ryw is not None and "backend" in ryw.upstreams and ryw.monolith == "legacy":
        on.add("ryw")
    return on


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_each_variant_has_exactly_its_layers(variant: Variant, tmp_path: Path) -> None:
    in_routes = {"auth", "limits", "shadow", "ryw"}
    assert _layers_on(_table(tmp_path, variant.off)) == in_routes - variant.off
    argv = command(variant.off, tmp_path / "routes.yaml", 8000)
    assert ("--no-access-log" in argv) == ("access-log" in variant.off)
    launched = sorted(variant.off & LAUNCHED)
    if launched:
        assert argv[1:5] == ["-m", "bench.breakdown_gateway", "--off", ",".join(launched)]
    else:
        assert argv[1:5] == ["-m", "cli", "gateway", "serve"]


def test_the_variants_are_all_on_one_per_layer_and_bare() -> None:
    assert [v.off for v in VARIANTS[1:-1]] == [frozenset({layer}) for layer in LAYERS]
    assert VARIANTS[0].off == frozenset() and BARE.off == frozenset(LAYERS)


# -- the launcher's null collaborators --------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    async with serve_upstream() as recorded:
        yield recorded


def _app(recorder: Recorder, tmp_path: Path, off: set[str]) -> GatewayApp:
    path = tmp_path / "routes.yaml"
    text = f"upstreams:\n  backend: {{url: '{recorder.url}'}}\ndefault: backend\n"
    write_routes(path, text)
    return build(str(path), off, reload_interval=0)


async def _get(app: GatewayApp) -> int:
    config = edge.config(app, lambda: app.watcher.table.edge, log_level="warning")
    async with serve(app, config=config) as url:
        response = await raw_request(int(url.rsplit(":", 1)[1]), get("/search"))
    return response.status


def _counted(app: GatewayApp) -> int:
    return sum(series.requests for series in app.monitor.traffic.series.values())


@pytest.mark.anyio
@pytest.mark.parametrize("off", [set(), {"metrics"}, {"resilience"}, {"metrics", "resilience"}])
async def test_the_launchers_app_answers_without_the_layers_it_took_out(
    recorder: Recorder, tmp_path: Path, off: set[str]
) -> None:
    app = _app(recorder, tmp_path, off)
    assert isinstance(app.gateway.record.monitor, Uncounted) == ("metrics" in off)
    assert isinstance(app.gateway.forward.resilience, DirectExchange) == ("resilience" in off)
    assert await _get(app) == 200
    assert len(recorder.seen) == 1
    assert _counted(app) == (0 if "metrics" in off else 1)
    exchanged = sum(state.stats.requests for state in app.resilience.states.values())
    assert exchanged == (0 if "resilience" in off else 1)


def test_the_launcher_refuses_a_layer_it_cannot_take_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        launcher_main(["--off", "auth", "--routes", "routes.yaml"])
    assert "unknown layer(s) auth" in capsys.readouterr().err


def test_the_launcher_serves_with_gateway_serves_arguments(tmp_path: Path) -> None:
    """The command line as the bench starts it: a real process, a request through it."""
    port, gateway_port = free_port(), free_port()
    off = frozenset({"metrics", "resilience", "auth"})
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(routes(off | {"limits", "shadow", "ryw"}, port, tmp_path))
    argv = command(off | {"access-log"}, routes_file, gateway_port)
    with (
        running(
            "upstream",
            upstream.command(port),
            port=port,
            ready_path="/",
            url_path="/",
            log_dir=tmp_path,
        ),
        running(
            "gateway",
            argv,
            port=gateway_port,
            ready_path=GATEWAY_HEALTH_PATH,
            url_path=AUTH_PATH,
            log_dir=tmp_path,
        ) as gateway,
    ):
        response = httpx.get(gateway.url, timeout=5, trust_env=False)
    assert response.status_code == 200
    assert response.headers["x-strangler-upstream"] == "backend"


def test_bench_proxy_breakdown_parses_into_its_options() -> None:
    args = _parser().parse_args(["proxy", "--breakdown", "--rounds", "3", "--duration", "4"])
    assert (args.breakdown, args.rounds, args.duration) == (True, 3, 4)
    assert _parser().parse_args(["proxy"]).breakdown is False
