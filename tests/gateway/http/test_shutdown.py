"""`strangler gateway serve` stopped by SIGTERM with a request in flight: the request
finishes (or its connection is closed once --shutdown-timeout has passed), the access log
is flushed, and the exit status is 0 (uvicorn alone would end it by the signal: 143)."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import listening_socket, write_routes

# Bounds how long the test waits for the process; the shutdown itself must be far quicker.
EXIT_WAIT_SECONDS = 60
_REQUEST = b"GET /held HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nlate"


def _answers_health(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/_strangler/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path, upstream_port: int, shutdown_timeout: str, shadow_port: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """`shadow_port`: mirror every request of /held there (a shadow store in tmp_path)."""
    routes = tmp_path / "routes.yaml"
    text = f'upstreams:\n  legacy: {{url: "http://127.0.0.1:{upstream_port}", timeout: 60s}}\n'
    if shadow_port:
        text += (
            f'  candidate: {{url: "http://127.0.0.1:{shadow_port}", timeout: 120s}}\n'
            f'shadow_store: {{url: "sqlite:///{tmp_path / "shadow.db"}"}}\n'
            "routes:\n  - name: held\n    path: /held\n    upstream: legacy\n"
            "    shadow: {upstream: candidate, sample: 1.0, timeout: 120s}\n"
        )
    write_routes(routes, text + "default: legacy\n")
    with contextlib.closing(listening_socket()) as probe:
        port = probe.getsockname()[1]
    log = tmp_path / "gateway.log"
    argv = ["serve", "--routes", str(routes), "--port", str(port)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "gateway", *argv, "--shutdown-timeout", shutdown_timeout],
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while not _answers_health(port):  # readiness, not synchronisation: polled
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _held_request(port: int, upstream: socket.socket) -> tuple[socket.socket, socket.socket]:
    """A request the gateway has forwarded and the upstream has not answered: (client side,
    upstream side)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=EXIT_WAIT_SECONDS)
    client.sendall(_REQUEST)
    held, _ = _held_request_at(upstream)
    return client, held


def _held_request_at(upstream: socket.socket) -> tuple[socket.socket, bytes]:
    """The next connection to `upstream`, once a whole request head has arrived on it."""
    upstream.settimeout(EXIT_WAIT_SECONDS)
    held, _ = upstream.accept()
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = held.recv(4096)
        assert chunk, "the gateway closed the upstream connection before the request"
        received += chunk
    return held, received


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@contextlib.contextmanager
def request_held(
    tmp_path: Path, shutdown_timeout: str
) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket, socket.socket, Path]]:
    """A gateway with one request forwarded to an upstream that has not answered it: (the
    gateway process, the client's socket, the upstream's end, the gateway's log)."""
    with (
        contextlib.closing(listening_socket()) as upstream,
        gateway_process(tmp_path, upstream.getsockname()[1], shutdown_timeout) as (
            process,
            port,
            log,
        ),
    ):
        client, held = _held_request(port, upstream)
        with client, held:
            yield process, client, held, log


def _exit_status(process: subprocess.Popen[bytes]) -> int:
    try:
        return process.wait(timeout=EXIT_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_WAIT_SECONDS} s after SIGTERM")


def test_sigterm_lets_the_request_in_flight_finish_and_exits_zero(tmp_path: Path) -> None:
    with request_held(tmp_path, "30") as (process, client, held, log):
        process.send_signal(signal.SIGTERM)
        held.sendall(_ANSWER)  # answered after the signal: still relayed
        response = _read_all(client)
        assert _exit_status(process) == 0, log.read_text()
    assert response.startswith(b"HTTP/1.1 200 "), response
    assert response.endswith(b"late")
    # the access log (stderr) was flushed at shutdown: the request's line is there
    assert '"path":"/held"' in log.read_text().replace(": ", ":")


def test_sigterm_cancels_a_request_held_past_the_timeout_and_exits_zero(tmp_path: Path) -> None:
    with request_held(tmp_path, "0.5") as (process, client, _, log):
        process.send_signal(signal.SIGTERM)
        # the upstream never answers: the timeout ends the wait, not the test
        exit_status = _exit_status(process)
        response = _read_all(client)
    assert exit_status == 0, log.read_text()
    # a clean close: the gateway's JSON answer, whole, and no traceback in the log
    assert response.startswith(b"HTTP/1.1 503 "), response
    assert b'"error":"shutting_down"' in response
    assert "Traceback" not in log.read_text() and "Exception in ASGI" not in log.read_text()


def test_sigterm_stops_waiting_for_a_shadow_copy_held_by_its_candidate(tmp_path: Path) -> None:
    """The shadow worker's drain is bounded too (gateway/http/shutdown.py SHADOW_CLOSE_TIMEOUT):
    a candidate that never answers (its timeout 120 s) does not hold the exit."""
    with (
        contextlib.closing(listening_socket()) as upstream,
        contextlib.closing(listening_socket()) as candidate,
        gateway_process(tmp_path, upstream.getsockname()[1], "0.5", candidate.getsockname()[1]) as (
            process,
            port,
            log,
        ),
    ):
        client, held = _held_request(port, upstream)
        with client, held:
            held.sendall(_ANSWER)
            response = _read_all(client)
            copy, _ = _held_request_at(candidate)
            with copy:
                process.send_signal(signal.SIGTERM)
                exit_status = _exit_status(process)  # not the candidate's own 120 s timeout
    assert response.endswith(b"late")
    assert exit_status == 0, log.read_text()
