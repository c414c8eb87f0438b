"""Several workers refuse a table whose shared state is in memory (`require_shared_store`),
at start and on reload; a rejected reload keeps the last good table."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.validation import ConfigError
from gateway.app import GatewayApp
from gateway.config.table import RouteTable, parse, require_shared_store
from gateway.observe.siblings import WorkerSlot
from tests.support.harness import OPEN_ACCESS, write_routes

BASE = (
    "upstreams:\n"
    '  legacy: {url: "http://127.0.0.1:9"}\n'
    '  search: {url: "http://127.0.0.1:9"}\n'
    "default: legacy\n"
)
PLAIN = "routes:\n  - {name: orders, path: /orders, upstream: legacy}\n"
LIMITED = "routes:\n  - {name: orders, path: /orders, upstream: legacy, rate_limit: {limit: 5, window: 1s}}\n"
KEYED = "routes:\n  - {name: orders, path: /orders, upstream: legacy, idempotency: {ttl: 1h}}\n"
PINNED = "read_your_writes: {upstreams: {search: {tables: all}}}\n" + PLAIN
REDIS = 'store: {backend: redis, url: "redis://127.0.0.1:9/0"}\n'


def table(text: str) -> RouteTable:
    return parse((BASE + text + OPEN_ACCESS).encode(), "routes.yaml")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (LIMITED, "rate_limit on route 'orders'"),
        (KEYED, "idempotency on route 'orders'"),
        (PINNED, "read_your_writes"),
    ],
)
def test_several_workers_refuse_what_memory_would_split(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        require_shared_store(table(text), 2)
    message = str(raised.value)
    assert named in message
    assert "store: {backend: redis" in message
    assert "2 workers" in message


@pytest.mark.parametrize("text", [LIMITED, KEYED, PINNED])
def test_one_worker_or_redis_is_accepted(text: str) -> None:
    require_shared_store(table(text), 1)
    require_shared_store(table(REDIS + text), 2)


def test_memory_without_shared_state_is_accepted_with_workers() -> None:
    require_shared_store(table(PLAIN), 4)


def test_a_worker_refuses_such_a_table_at_start_and_on_reload(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    slot = WorkerSlot(0, 2, tmp_path)
    write_routes(routes, BASE + LIMITED)
    with pytest.raises(ConfigError, match="backend: redis"):
        GatewayApp(routes, worker=slot)
    write_routes(routes, BASE + PLAIN)
    app = GatewayApp(routes, worker=slot)
    serving = app.watcher.table.version
    write_routes(routes, BASE + LIMITED)
    assert app.watcher.reload() is False
    assert app.watcher.table.version == serving  # the last good table keeps serving
    failure = app.watcher.last_failure
    assert failure is not None and any("backend: redis" in e for e in failure.errors)
    # the same file is fine for one worker
    assert GatewayApp(routes).watcher.table.version != serving
