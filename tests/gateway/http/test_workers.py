"""`strangler gateway serve --workers 2`, as real processes: one port, both workers serve,
the scrape holds both workers' counts, a sticky cookie is the same whichever worker set it,
SIGTERM stops every worker with status 0, a killed worker is forked again, a crash loop
ends the parent with status 1, and a table with shared state in memory is refused."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench import upstream
from tests.support.harness import listening_socket, write_routes

# Bounds on waiting for the processes; each step itself is far quicker.
DEADLINE_SECONDS = 30
# Fresh connections sent before both workers must have answered some: the kernel hands
# each to whichever worker accepts first, so one of them alone answering 200 would be a bug.
MAX_CONNECTIONS = 200


def free_port() -> int:
    with contextlib.closing(listening_socket()) as probe:
        port: int = probe.getsockname()[1]
        return port


def request(port: int, path: str) -> http.client.HTTPResponse:
    """One request on a fresh connection (the body read, the connection closed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def wait_for(condition: str, check: object) -> None:
    """Poll `check()` (a readiness condition, not a synchronisation) until it holds."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {DEADLINE_SECONDS} s: {condition}"
        time.sleep(0.05)


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def started(log: Path) -> int:
    return log.read_text().count("Application startup complete")


def answers(port: int) -> bool:
    try:
        return request(port, "/_strangler/health").status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serving(routes: Path, *argv: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = routes.parent / "gateway.log"
    command = ["gateway", "serve", "--routes", str(routes), "--port", str(port), *argv]
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "cli", *command], stderr=stderr)
    try:
        wait_for("the gateway answers", lambda: answers(port) or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        wait_for("two workers serving", lambda: started(log) == 2)
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    with log.open("wb") as out:
        process = subprocess.Popen(upstream.command(port), stderr=out, stdout=out)
    try:
        wait_for("the upstream answers", lambda: _upstream_answers(port))
        yield port
    finally:
        process.kill()
        process.wait()


def _upstream_answers(port: int) -> bool:
    try:
        return request(port, "/").status == 200
    except OSError:
        return False


def split_routes(directory: Path, backend: int) -> Path:
    routes = directory / "routes.yaml"
    url = f"http://127.0.0.1:{backend}"
    write_routes(
        routes,
        f'upstreams:\n  legacy: {{url: "{url}"}}\n  search: {{url: "{url}"}}\n'
        "default: legacy\n"
        f'shadow_store: {{url: "sqlite:///{directory / "shadow.db"}"}}\n'
        "routes:\n  - {name: api, path: /api, upstream: {legacy: 50, search: 50}}\n",
    )
    return routes


def served_by_worker(port: int) -> dict[str, float]:
    """worker -> requests on the route `api`, from one scrape."""
    text = request_text(port, "/metrics")
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "strangler_requests_total" and s.labels["route"] == "api":
                counts[s.labels["worker"]] = counts.get(s.labels["worker"], 0) + s.value
    return counts


def request_text(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def test_two_workers_share_one_port_and_one_scrape_counts_both(
    tmp_path: Path, backend: int
) -> None:
    with serving(split_routes(tmp_path, backend), "--workers", "2") as (_, port, _log):
        cookies, sent, counts = set(), 0, {}
        while len(counts) < 2:
            assert sent < MAX_CONNECTIONS, f"one worker answered all {sent} connections"
            for _ in range(10):
                response = request(port, "/api")
                assert response.status == 200
                cookies.add(response.getheader("set-cookie"))
            sent += 10
            counts = served_by_worker(port)
        assert set(counts) == {"0", "1"}
        # every scrape, whichever worker answers it, holds the whole gateway's count
        for _ in range(6):
            assert sum(served_by_worker(port).values()) == sent
    # the first visit's cookie is a MAC of the address under one key for every worker
    assert len(cookies) == 1, cookies


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_every_worker_and_exits_zero(
    tmp_path: Path, backend: int, signum: signal.Signals
) -> None:
    with serving(split_routes(tmp_path, backend), "--workers", "2") as (process, _, log):
        workers = children(process.pid)
        process.send_signal(signum)
        assert process.wait(timeout=DEADLINE_SECONDS) == 0, log.read_text()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert log.read_text().count("Application shutdown complete") == 2


def test_a_killed_worker_is_forked_again(tmp_path: Path, backend: int) -> None:
    with serving(split_routes(tmp_path, backend), "--workers", "2") as (process, port, log):
        victim = min(children(process.pid))
        os.kill(victim, signal.SIGKILL)
        wait_for("a new worker in the dead one's place", lambda: started(log) == 3)
        assert len(now := children(process.pid)) == 2 and victim not in now
        assert f"(pid {victim}) died after" in log.read_text()
        assert "killed by SIGKILL" in log.read_text()
        assert request(port, "/api").status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_SECONDS) == 0, log.read_text()


def test_workers_that_keep_dying_end_the_parent_with_status_1(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from gateway.http.workers import Supervisor\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "sys.exit(Supervisor(2, lambda slot: 3).run())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=DEADLINE_SECONDS
    )
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "giving up" in err
    assert err.count("died after") == 5  # CRASH_LOOP quick deaths, then no more forks


def test_shared_state_in_memory_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    write_routes(
        routes,
        'upstreams:\n  legacy: {url: "http://127.0.0.1:9"}\ndefault: legacy\n'
        "routes:\n  - {name: api, path: /api, upstream: legacy, "
        "rate_limit: {limit: 5, window: 1s}}\n",
    )
    argv = ["gateway", "serve", "--routes", str(routes), "--port", str(free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv, "--workers", "2"],
        capture_output=True,
        timeout=DEADLINE_SECONDS,
    )
    assert done.returncode == 1
    assert "rate_limit on route 'api'" in done.stderr.decode()
    assert "store: {backend: redis" in done.stderr.decode()
    assert "workers serving" not in done.stderr.decode()


def test_access_log_lines_reach_a_pipe_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.http import workers

    writes: list[bytes] = []
    monkeypatch.setattr(
        workers.os, "write", lambda fd, data: writes.append(bytes(data)) or len(data)
    )
    lines = [b"x" * n + b"\n" for n in (100, 3000, 2000, 50, 4000, 10)]
    workers.LineWriter(2).write(b"".join(lines))
    assert b"".join(writes) == b"".join(lines)
    assert all(len(w) <= workers.select.PIPE_BUF and w.endswith(b"\n") for w in writes)
    assert len(writes) < len(lines)  # lines are batched, not one write each
