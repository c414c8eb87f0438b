"""Child processes under test: start one, wait until it answers, always stop it.

``running`` is a context manager, so a target started inside ``with`` (or an ``ExitStack``) is
terminated on every way out: normal exit, an exception, Ctrl-C, or SIGTERM turned into
``SystemExit`` by the entry point. Output goes to a log file, never to a pipe nobody reads (a
chatty child would block on a full pipe and look slow); its tail is quoted when it fails.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.errors import BenchError

STARTUP_DEADLINE_SECONDS = 20.0
_STOP_GRACE_SECONDS = 5.0
_POLL_INTERVAL_SECONDS = 0.05
_LOG_TAIL_CHARS = 2000


@dataclass(frozen=True)
class Target:
    """A started process and the loopback URL it is measured on."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. a token)
    pid: int = 0  # the started process, for what a bench reads about it from /proc


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now; the child binds it a moment later (a small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, path: str) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0, trust_env=False)
    except httpx.TransportError:
        return False  # not listening yet
    return response.status_code == 200


def _log_tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return text[-_LOG_TAIL_CHARS:].strip() or "(no output)"


def _wait_ready(name: str, child: subprocess.Popen[bytes], log: Path, port: int, path: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchError(
                f"{name} exited with status {child.returncode} before it was ready; "
                f"its output:\n{_log_tail(log)}"
            )
        if _answers(port, path):
            return
        time.sleep(_POLL_INTERVAL_SECONDS)
    raise BenchError(
        f"{name} did not answer 200 on http://127.0.0.1:{port}{path} within "
        f"{STARTUP_DEADLINE_SECONDS:.0f} s; its output:\n{_log_tail(log)}"
    )


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=_STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@contextmanager
def running(
    name: str,
    argv: list[str],
    *,
    port: int,
    ready_path: str,
    url_path: str,
    log_dir: Path,
    headers: tuple[tuple[str, str], ...] = (),
) -> Iterator[Target]:
    """Start ``argv``, wait until GET ``ready_path`` on ``port`` answers 200, stop it on exit.

    The child gets its own session so a Ctrl-C in the terminal reaches only the bench, which
    then stops the children in order instead of racing their own signal handling.
    """
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        try:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        except OSError as exc:
            raise BenchError(f"{name} could not be started ({' '.join(argv)}): {exc}") from exc
    try:
        _wait_ready(name, child, log, port, ready_path)
        url = f"http://127.0.0.1:{port}{url_path}"
        yield Target(name=name, url=url, headers=headers, pid=child.pid)
    finally:
        _stop(child)


class Stage:
    """A benchmark's processes: their logs in a temporary work directory, all of them
    stopped and the directory removed when `stack` closes."""

    def __init__(self, stack: ExitStack, prefix: str, url_path: str) -> None:
        self.stack = stack
        self.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        self.url_path = url_path  # what a Target's URL asks for

    def start(self, name: str, argv: list[str], port: int, ready: str) -> Target:
        """Start `argv` as `name` and wait until GET `ready` on `port` answers 200."""
        return self.stack.enter_context(
            running(
                name, argv, port=port, ready_path=ready, url_path=self.url_path, log_dir=self.work
            )
        )
