"""The shadow worker process: runs the `Comparer` on the copies the gateway sends, reports
counters and acknowledgements back (`gateway.shadow.worker` starts it and says why).

It ends when its socket reaches EOF (the gateway closed it or died): it drains the
comparisons in flight, stores them and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any, cast

from gateway.config.shadow import ShadowStoreSettings, ShadowWorkerSettings
from gateway.shadow.comparer import Comparer
from gateway.shadow.frames import ACK, COPIES, DONE, DROPS, HELLO, ROUTE, STATS, SYNC, Frames, frame
from gateway.shadow.mirror import Copy, RouteStats
from gateway.shadow.store import create_store

_REPORT_EVERY = 0.25  # seconds between the worker's STATS frames
_ACK_EVERY = 0.002  # seconds, at most, between a copy finished and its ACK


class _Worker(asyncio.Protocol):
    def __init__(self) -> None:
        self.frames = Frames()
        self.engine: Comparer | None = None
        self.routes: dict[int, tuple[Any, ...]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.reporter: asyncio.TimerHandle | None = None
        self.acker: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for kind, payload in self.frames.feed(data):
            if kind == HELLO:
                self.hello(*payload)
                continue
            engine = self.engine
            assert engine is not None, "HELLO comes first"
            if kind == COPIES:
                routes = self.routes
                for wire in payload:
                    engine.launch(Copy(*routes[wire[0]], *wire[1:]))
            elif kind == ROUTE:
                self.routes[payload[0]] = payload[1:]
            elif kind == DROPS:
                for (route, reason), count in payload.items():
                    engine.tally(route, reason, count)
            elif kind == SYNC:
                task = asyncio.get_running_loop().create_task(self.sync(*payload))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def hello(self, store: ShadowStoreSettings, settings: ShadowWorkerSettings) -> None:
        if settings.nice:
            os.nice(settings.nice)
        if settings.idle and hasattr(os, "SCHED_IDLE"):
            # nice is relative to the processes of the worker's own session (Linux's
            # autogroup) or cgroup: against the others, it had a core as often as the
            # gateway. SCHED_IDLE runs it only on a core nothing else wants (issue 4).
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        self.engine = Comparer(create_store(store.url), store, settings.concurrency)
        self.engine.on_finish = self.ack_soon
        self.reporter = asyncio.get_running_loop().call_later(_REPORT_EVERY, self.report)

    def take_stats(self) -> dict[str, RouteStats]:
        assert self.engine is not None
        stats, self.engine.stats = self.engine.stats, {}
        return stats

    def report(self) -> None:
        if self.engine is not None and self.engine.stats and self.transport is not None:
            self.transport.write(frame(STATS, self.take_stats()))
        self.reporter = asyncio.get_running_loop().call_later(_REPORT_EVERY, self.report)

    def ack_soon(self) -> None:
        if self.acker is None:
            self.acker = asyncio.get_running_loop().call_later(_ACK_EVERY, self.ack)

    def ack(self) -> None:
        if self.acker is not None:
            self.acker.cancel()
            self.acker = None
        transport = self.transport
        if self.engine is not None and transport is not None and not transport.is_closing():
            transport.write(frame(ACK, self.engine.finished))

    async def sync(self, token: int, drain: bool) -> None:
        assert self.engine is not None
        await (self.engine.drain() if drain else self.engine.flush())
        if self.transport is not None and not self.transport.is_closing():
            self.ack()
            self.transport.write(frame(DONE, (token, self.take_stats())))


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    _, worker = await loop.create_unix_connection(_Worker, sock=sock)
    await worker.closed
    if worker.reporter is not None:
        worker.reporter.cancel()
    if worker.engine is not None:
        await worker.engine.close()


def main(argv: list[str]) -> int:
    import uvloop

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sock = socket.socket(fileno=int(argv[0]))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        uvloop.run(serve(sock))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
