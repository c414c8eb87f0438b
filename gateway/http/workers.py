"""`gateway serve --workers N`: one listening socket, N forked servers, one supervisor.

The parent binds the socket once, then forks the workers before any event loop or thread
exists; each worker builds its own GatewayApp and runs uvicorn on the inherited socket, as
one worker does on its own (the kernel hands each new connection to whichever worker
accepts it first). The parent serves nothing: it waits for its children.

- **Stop**: SIGTERM or SIGINT to the parent is passed to every worker, each stops as one
  worker does (gateway/http/shutdown.py: `--shutdown-timeout` applies in each), and the
  parent exits 0 once they all have. The workers run in their own process group, so a
  terminal's Ctrl-C reaches the parent alone and each worker gets the signal once (uvicorn
  takes a second SIGINT as "stop now"); on Linux a worker is sent SIGTERM if the parent
  dies (PR_SET_PDEATHSIG), so none outlives a parent killed with SIGKILL.
- **A worker that dies** unasked is logged and forked again in its slot. A crash loop does
  not spin: after CRASH_LOOP deaths in a row of workers that lived less than QUICK_DEATH
  seconds each, the parent stops the others and exits 1.
- **What the parent makes before forking is shared**: the socket, the directory the
  workers' metrics sockets live in (gateway/observe/siblings.py), and the sticky cookie's
  default key (gateway.config.rollout.process_secret), so that a cookie one worker set is
  the one every other worker, and every restarted one, would set.
- **Spreading connections**: the workers accept one connection at a time
  (UV_TCP_SINGLE_ACCEPT), so a burst (a load balancer opening its pool) is shared.

uvicorn has a supervisor of its own (`uvicorn.supervisors.Multiprocess`), but it starts
workers with multiprocessing's "spawn": the app must be an import string and the config is
pickled, and the gateway's protocol class is built per app (gateway/http/server.py:
`protocol(settings)` closes over the app's route table), so it cannot be pickled. It also
restarts a dying worker without limit. Hence this module: fork, wait, forward, restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import BinaryIO, cast

from gateway.config.rollout import process_secret
from gateway.observe.siblings import WorkerSlot

log = logging.getLogger("strangler.workers")

QUICK_DEATH = 1.0  # seconds: a worker that lived less than this died "quickly"
CRASH_LOOP = 5  # quick deaths in a row after which the parent gives up
BACKLOG = 2048  # the listening socket's queue, shared by every worker
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (SO_REUSEADDR, as uvicorn binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP
    # (without it an answer on a kept-alive connection can wait for a delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


class LineWriter:
    """A binary stream that writes whole lines of at most PIPE_BUF bytes with one write(2)
    each: the access log's batches of N workers sharing one pipe do not interleave mid-line
    (POSIX makes a pipe write of up to PIPE_BUF bytes atomic)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        view, start = memoryview(data), 0
        while start < len(data):
            end = start + select.PIPE_BUF if len(data) - start > select.PIPE_BUF else len(data)
            if end < len(data):  # cut after the last newline that fits, if there is one
                cut = data.rfind(b"\n", start, end)
                end = cut + 1 if cut >= start else end
            while start < end:
                start += os.write(self.fd, view[start:end])
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered here."""


class Supervisor:
    """Forks `count` workers, each running `serve(slot)` (its exit status), and keeps
    them running until it is asked to stop (see the module's doc)."""

    def __init__(self, count: int, serve: Callable[[WorkerSlot], int]) -> None:
        self.count = count
        self.serve = serve
        self.directory = Path(tempfile.mkdtemp(prefix="strangler-workers-"))
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (slot, forked at)
        self.stopping = False
        self.quick_deaths = 0

    def run(self) -> int:
        """Serve until stopped: 0 after a stop that was asked for, 1 after a crash loop."""
        process_secret()  # made once, before the fork: every worker holds the same key
        # libuv (uvloop) accepts every pending connection in one go; with this it takes one
        # and yields the CPU, so a burst of connections spreads over the workers (node's
        # cluster module does the same) instead of piling onto whichever woke first
        os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
        previous = {s: signal.signal(s, self._stop) for s in _STOP_SIGNALS}
        try:
            for index in range(self.count):
                self._fork(index)
            log.info("%d workers serving (parent pid %d)", self.count, os.getpid())
            return self._wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for entry in self.directory.iterdir():
                entry.unlink(missing_ok=True)
            self.directory.rmdir()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.children):
            _signal(pid, signum)

    def _fork(self, index: int) -> None:
        parent = os.getpid()
        # Blocked across the fork: a stop signal waits until the child has reset its
        # handlers (it must not run the parent's) and the parent knows the child's pid.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if self.stopping:  # asked to stop before this fork: no new worker
                return
            pid = os.fork()
            if pid == 0:
                _child(parent, self.serve, WorkerSlot(index, self.count, self.directory))
            self.children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def _wait(self) -> int:
        status = 0
        while self.children:
            pid, code = os.waitpid(-1, 0)
            index, forked_at = self.children.pop(pid)
            if self.stopping:
                if code != 0:  # a stop that did not complete in this worker
                    log.error("worker %d (pid %d) stopped: %s", index, pid, _describe(code))
                    status = 1
                continue
            lived = time.monotonic() - forked_at
            log.error(
                "worker %d (pid %d) died after %.1f s: %s", index, pid, lived, _describe(code)
            )
            self.quick_deaths = self.quick_deaths + 1 if lived < QUICK_DEATH else 0
            if self.quick_deaths < CRASH_LOOP:
                self._fork(index)
                continue
            log.error(
                "%d workers died within %.0f s of starting: giving up", CRASH_LOOP, QUICK_DEATH
            )
            self._stop(signal.SIGTERM, None)
            return self._wait() or 1
        return status


def _child(parent: int, serve: Callable[[WorkerSlot], int], slot: WorkerSlot) -> None:
    """The worker's side of the fork: never returns into the parent's stack."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)
        _die_with(parent)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        code = serve(slot)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it stopped on again: asked for
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


def _die_with(parent: int) -> None:
    """On Linux, SIGTERM this process when the parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(1)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone: waitpid collects it
        os.kill(pid, signum)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def stderr_lines() -> BinaryIO:
    """stderr for a worker's access log: whole lines, never interleaved with a sibling's."""
    return cast(BinaryIO, LineWriter(sys.stderr.fileno()))
