"""A shadow worker that compares nothing, for `bench shadow --separate`'s `shadow-sink`.

    python -m bench.shadow_sink FD

It speaks the real worker's side of the frames (gateway/shadow/worker_process.py): it takes
the gateway's copies and acknowledges each (an ACK at most every 2 ms, as the worker does
when a comparison ends) and answers a SYNC with DONE and no counters. So the gateway does
all of its own work per copy (admission, the exchange kept, the tuple, the pickled batch,
the send, the ACKs read), while no candidate is asked and nothing is compared or stored:
the difference from the unshadowed gateway is the gateway's own cost of mirroring, without
the CPU the worker and the candidate take from the machine. It runs at the priority the
HELLO asks for, as the worker does. `bench.breakdown_gateway --off comparisons` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from typing import cast

from gateway.config.shadow import ShadowWorkerSettings
from gateway.shadow.frames import ACK, COPIES, DONE, HELLO, SYNC, Frames, frame

_ACK_EVERY = 0.002  # seconds, as the worker's


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.frames = Frames()
        self.taken = 0  # copies, in all: what an ACK says the worker is done with
        self.transport: asyncio.Transport | None = None
        self.acker: asyncio.TimerHandle | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        for kind, payload in self.frames.feed(data):
            if kind == HELLO:
                _lower_priority(payload[1])
            elif kind == COPIES:
                self.taken += len(payload)
                if self.acker is None:
                    self.acker = asyncio.get_running_loop().call_later(_ACK_EVERY, self.ack)
            elif kind == SYNC:
                self.ack()
                self.write(frame(DONE, (payload[0], {})))

    def ack(self) -> None:
        if self.acker is not None:
            self.acker.cancel()
            self.acker = None
        self.write(frame(ACK, self.taken))

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _lower_priority(settings: ShadowWorkerSettings) -> None:
    if settings.nice:
        os.nice(settings.nice)
    if settings.idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    _, sink = await loop.create_unix_connection(_Sink, sock=sock)
    await sink.closed


def main(argv: list[str]) -> int:
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(socket.socket(fileno=int(argv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
