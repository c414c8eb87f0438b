"""The shadow worker, the gateway's side: comparisons in a process of their own, fed copies
over a socket pair.

Why a process: in the gateway's loop every copy cost a second upstream exchange, a diff and
a store row, and the store's thread contended for the GIL (profile at 100% mirrored: 27% of
the gateway's GIL time in comparisons, 14% in store writes); the client's answers waited
behind them. Here the gateway's cost per copy is a tuple appended to a batch; the batch is
pickled into one frame and sent with one `send` at most 2 ms after its first copy (sooner
when its bodies reach 64 KiB): a frame per loop turn cost ~21 us of the gateway's CPU per
copy at a fixed rate, most of it the send that wakes the worker. The worker runs the same
`Comparer` as the `inline` mode, at a lower CPU priority: `nice`, and on Linux the SCHED_IDLE
class (`idle`), because nice only ranks a process among those of its own session
(autogroup) or cgroup. Measured (issue 4, 2 cores): a nice-19 busy loop in another session
cost the gateway 43% of its throughput, a SCHED_IDLE one nothing measurable; with the worker
at nice 19 alone the gateway got 0.88-0.96 of a core at saturation, with SCHED_IDLE 0.98.

Bounded everywhere: the frames not yet taken by the worker are capped at `buffer` bytes in
the gateway (plus the kernel's socket buffer); copies beyond it are dropped and counted.
The worker reads as fast as it can and drops copies beyond `concurrency` in flight. Admission
is by credit: the worker acknowledges the copies it is done with (ACK, at most every 2 ms),
and the gateway refuses a copy in `admit`, before the proxy keeps any of the exchange, when
`2 * concurrency` copies are outstanding (sent, or batched, and not yet acknowledged), or
when its copy budget says its loop is busy (`gateway.shadow.budget`): a worker that cannot
keep up, or a gateway at capacity, then costs a counter per copy, not a copy kept, a pickle,
a send and a backlog.

The frames, both ways (`gateway.shadow.frames`; the worker's side is
`gateway.shadow.worker_process`):

  gateway -> worker: HELLO (store and worker settings, first), ROUTE (an id for a route,
  its primary and candidate upstreams, once each), COPIES (a batch of copies, the route by
  id), DROPS ((route, reason) -> copies the gateway dropped, every 100 ms at most), SYNC
  (a token; `drain` waits for the comparisons in flight first)
  worker -> gateway: STATS (per-route counters since its last report, every 250 ms when
  something changed), ACK (how many copies the worker is done with, in all) and DONE (a
  SYNC's token and the counters up to it, after an ACK)

The worker ends when its socket reaches EOF (the gateway closed it or died): it drains the
comparisons in flight, stores them and exits. A worker that dies is started again on the
next copy, at most once a second; copies meanwhile are dropped and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import socket
import subprocess
import sys
from collections import Counter
from typing import Any

from gateway.config.rollout import RouteRollout
from gateway.config.routes import Route
from gateway.config.shadow import ShadowStoreSettings, ShadowWorkerSettings
from gateway.shadow.budget import Budget
from gateway.shadow.comparer import Comparer
from gateway.shadow.frames import ACK, COPIES, DONE, DROPS, HELLO, ROUTE, STATS, SYNC, Frames, frame
from gateway.shadow.mirror import (
    GATEWAY_BUSY,
    ROUTE_FIELDS,
    SHADOW_BEHIND,
    WORKER_DOWN,
    Copy,
    Mirror,
    RouteStats,
    route_stats,
)
from gateway.shadow.store import ShadowStore

log = logging.getLogger("strangler.shadow")

# seconds, at most, between a drop and its DROPS frame: at capacity most copies are dropped,
# and a frame per loop turn cost the gateway a send and woke the worker as often
_DROPS_EVERY = 0.1
# seconds, at most, between a copy batched and its COPIES frame sent. A frame per loop turn
# cost the gateway ~21 us of CPU per copy at one copy a turn (a fixed rate's usual), most
# of it the send that wakes the worker; a frame every 2 ms, ~4 us (measured: a turn every
# 200 us, the worker bench/shadow_sink.py). A copy waits that much longer to be compared.
FLUSH_EVERY = 0.002
# bytes of copies' bodies batched beyond which the frame goes at once, so the batch stays
# small next to `buffer`, which the admission checks with it
BATCH_BYTES = 64 * 1024
_RESPAWN_AFTER = 1.0  # seconds, at least, between two worker starts
_SYNC_TIMEOUT = 60.0  # a SYNC the worker does not answer in time is given up
_STOP_TIMEOUT = 10.0


def create_mirror(
    store: ShadowStore, settings: ShadowStoreSettings, worker: ShadowWorkerSettings
) -> Mirror:
    """The `Mirror` adapter that `shadow_worker: {mode: ...}` names, on the gateway's `store`
    (the process adapter only reads it, for reports; its worker writes through its own)."""
    if worker.mode == "inline":
        return Comparer(store, settings, worker.concurrency, budget=Budget(worker.busy_limit))
    return WorkerMirror(store, settings, worker)


# --- the gateway's side ----------------------------------------------------------------------


class WorkerMirror:
    """The `process` adapter: copies go to a worker process, counters come back."""

    def __init__(
        self, store: ShadowStore, settings: ShadowStoreSettings, worker: ShadowWorkerSettings
    ) -> None:
        self.store = store  # read here only, for reports
        self.store_settings = settings
        self.settings = worker
        self.budget = Budget(worker.busy_limit)
        self.stats: dict[str, RouteStats] = {}
        # the worker's argv before its socket's fd (a benchmark's launcher may swap it)
        self.command = [sys.executable, "-m", "gateway.shadow.worker_process"]
        self.flush_every = FLUSH_EVERY
        self._routes: dict[int, tuple[Route, int]] = {}  # id(route) -> (route, its id)
        self._ids = itertools.count()
        self._batch: list[tuple[Any, ...]] = []
        self._batched = 0  # bytes of the bodies in `_batch`
        # (route, reason) -> copies dropped here, not yet told the worker
        self._drops: Counter[tuple[str, str]] = Counter()
        self._out = bytearray()  # frames the socket has not taken yet
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._frames = Frames()
        self._sent = 0  # copies batched for the current worker
        self._acked = 0  # of which it is done with
        self._writing = False
        self._batch_timer: asyncio.TimerHandle | None = None
        self._drops_timer: asyncio.TimerHandle | None = None
        self._started_at = -_RESPAWN_AFTER
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._closing = False

    def admit(self, route: Route) -> bool:
        # Copies sent or batched and not yet acknowledged; the requests admitted and still
        # waiting for the primary may add theirs (the worker drops beyond `concurrency`).
        outstanding = self._sent - self._acked
        waiting = len(self._out) + self._batched
        if outstanding >= 2 * self.settings.concurrency or waiting > self.settings.buffer:
            self._drop(route.name, SHADOW_BEHIND)
        elif not self._connected():
            self._drop(route.name, WORKER_DOWN)
        elif not self.budget.admit():
            self._drop(route.name, GATEWAY_BUSY)
        else:
            return True
        return False

    def launch(self, copy: Copy) -> None:
        if self._sock is None:  # lost since the copy was admitted
            self._drop(copy.route.name, WORKER_DOWN)
            return
        known = self._routes.get(id(copy.route))
        if known is None or known[0] is not copy.route:
            try:
                known = self._route(copy)
            except Exception:  # a copy must never fail the request it copies
                log.exception("route %s cannot be sent to the shadow worker", copy.route.name)
                self._drop(copy.route.name, WORKER_DOWN)
                return
        self._batch.append((known[1], *copy[ROUTE_FIELDS:]))
        self._batched += len(copy.response_body) + len(copy.body or b"")
        self._sent += 1
        if self._batched >= BATCH_BYTES:
            self._flush()
        elif self._batch_timer is None:
            loop = asyncio.get_running_loop()
            self._batch_timer = loop.call_later(self.flush_every, self._flush)

    def dropped(self, route: Route, reason: str) -> None:
        self._drop(route.name, reason)

    def _drop(self, route: str, reason: str) -> None:
        stats = route_stats(self.stats, route)
        stats.mirrored += 1
        stats.drops[reason] += 1
        self._drops[route, reason] += 1
        if self._drops_timer is None and self._connected():
            self._drops_timer = asyncio.get_running_loop().call_later(_DROPS_EVERY, self._flush)

    def _route(self, copy: Copy) -> tuple[Route, int]:
        if len(self._routes) > 1000:  # many reloads: forget the old tables' routes
            self._routes.clear()
        known = self._routes[id(copy.route)] = (copy.route, next(self._ids))
        self._flush()  # copies of earlier routes first, then this route's frame
        # the worker compares: it needs the route's name and shadow rules, not its rollout
        # (whose keyed hash does not pickle) or its limits
        route = dataclasses.replace(copy.route, rollout=RouteRollout(), limits=None)
        self._out += frame(ROUTE, (known[1], route, *copy[1:ROUTE_FIELDS]))
        return known

    def _flush(self) -> None:
        self._cancel_timers()
        if self._sock is None:
            return
        if self._batch:
            self._out += frame(COPIES, self._batch)
            self._batch, self._batched = [], 0
        if self._drops:
            self._out += frame(DROPS, dict(self._drops))
            self._drops.clear()
        self._send()

    def _cancel_timers(self) -> None:
        for timer in (self._batch_timer, self._drops_timer):
            if timer is not None:
                timer.cancel()
        self._batch_timer = self._drops_timer = None

    def _send(self) -> None:
        sock = self._sock
        if sock is None or not self._out:
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            asyncio.get_running_loop().add_writer(sock, self._writable)
        elif not self._out and self._writing:
            self._writing = False
            asyncio.get_running_loop().remove_writer(sock)

    def _writable(self) -> None:
        self._send()

    def _connected(self) -> bool:
        """Whether a worker takes copies, starting one when none runs (at most once a second)."""
        if self._sock is not None:
            return True
        loop = asyncio.get_running_loop()
        if self._closing or loop.time() - self._started_at < _RESPAWN_AFTER:
            return False
        self._started_at = loop.time()
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [*self.command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            log.exception("could not start the shadow worker; copies are dropped")
            ours.close()
            return False
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._out += frame(HELLO, (self.store_settings, self.settings))
        loop.add_reader(ours, self._readable)
        log.info("shadow worker started (pid %d)", self._process.pid)
        return True

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        for kind, payload in self._frames.feed(data):
            if kind == ACK:
                self._acked = payload
            elif kind == STATS:
                self._merge(payload)
            elif kind == DONE:
                token, stats = payload
                self._merge(stats)
                waiter = self._waiters.pop(token, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _merge(self, stats: dict[str, RouteStats]) -> None:
        for route, delta in stats.items():
            route_stats(self.stats, route).add(delta)

    def _lost(self) -> None:
        """The worker is gone: forget it; the next copy starts a new one."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock)
        if self._writing:
            loop.remove_writer(sock)
            self._writing = False
        sock.close()
        self._batch, self._out, self._routes, self._frames = [], bytearray(), {}, Frames()
        self._batched = 0
        self._cancel_timers()  # the drops wait for the next worker
        self._sent = self._acked = 0
        process = self._process
        if not self._closing and process is not None:
            # Its end of the socket is closed: it has exited or is past saving. Reaping it
            # blocks for the moment a dead process takes.
            if process.poll() is None:
                process.kill()
            code = process.wait()
            log.error("the shadow worker exited (status %s); copies in transit are lost", code)
            self._process = None
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _sync(self, drain: bool) -> None:
        if self._sock is None:
            return
        token = next(self._ids)
        waiter = self._waiters[token] = asyncio.get_running_loop().create_future()
        self._flush()
        self._out += frame(SYNC, (token, drain))
        self._send()
        try:
            await asyncio.wait_for(waiter, _SYNC_TIMEOUT)
        except TimeoutError:
            log.warning("the shadow worker did not answer within %.0f s", _SYNC_TIMEOUT)

    async def flush(self) -> None:
        await self._sync(drain=False)

    async def drain(self) -> None:
        await self._sync(drain=True)

    async def close(self) -> None:
        self.budget.close()
        await self.drain()
        self._closing = True
        self._lost()  # EOF: the worker stores what it has and exits
        process, self._process = self._process, None
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, _STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        await self.store.close()
