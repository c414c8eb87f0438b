"""The gateway's copy budget: fewer copies while its own event loop is busy.

A copy is never free for the gateway: the exchange is kept, a tuple built and serialised and
sent, and on a machine it shares the worker and the candidate take CPU too. At saturation
mirroring every request cost the primary 15-25% of its throughput (`bench shadow`, 2 cores,
issue 4) even with the comparisons in a worker process. So the gateway watches how busy the
thread running its event loop is, and mirrors a smaller share of the sampled requests while
it is busy: the client's answer keeps the CPU.

Busy is measured every `INTERVAL` as the share of wall time the loop's thread ran or was
runnable and waiting for a core (Linux's /proc/thread-self/schedstat: a gateway starved by
its neighbours is as overloaded as one running flat out; elsewhere CPU time alone). The
share of copies admitted follows AIMD, as TCP's congestion window does: above `limit` it
halves, at or below it grows by `STEP`. `FLOOR` copies per interval are always admitted, so
light traffic is mirrored in full whatever else the process does, and a saturated gateway
still compares a trickle. Copies refused are dropped and counted (`gateway_busy`).

The timer runs only while copies are asked for: an interval without any stops it and resets
the share, so an idle gateway does not wake up to measure itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

INTERVAL = 0.1  # seconds between two measurements
STEP = 0.1  # the share's additive increase per quiet interval: 0 -> 1 in a second
FLOOR = 10  # copies admitted in every interval whatever the share (100 a second)
_SCHEDSTAT = Path("/proc/thread-self/schedstat")  # ns on a CPU, ns waiting for one, slices


def thread_usage() -> float:
    """Seconds the calling thread has run or waited to run, since it started."""
    try:
        running, waiting, _ = _SCHEDSTAT.read_bytes().split()
    except (OSError, ValueError):
        return time.thread_time()
    return (int(running) + int(waiting)) / 1e9


class Budget:
    """Admits a share of the copies asked for, by how busy the loop was (see the module).

    `usage` returns the busy seconds so far of the loop's thread (called on that thread) and
    `clock` the wall time; both are parameters for tests, which call `update` themselves.
    """

    def __init__(
        self,
        limit: float,
        *,
        floor: int = FLOOR,
        usage: Callable[[], float] = thread_usage,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit  # 1 (100%) turns the budget off: busy never exceeds it
        self.share = 1.0  # of the copies asked for beyond the floor, admitted
        self.busy = 0.0  # the last interval's share of wall time
        self._floor = floor
        self._free = floor  # left in this interval
        self._credit = 0.0  # admits one copy each time it reaches 1
        self._asked = 0  # copies asked for in this interval
        self._usage = usage
        self._clock = clock
        self._last: tuple[float, float] | None = None  # (wall, usage) at the last update
        self._timer: asyncio.TimerHandle | None = None

    def admit(self) -> bool:
        if self.limit >= 1.0:
            return True
        self._asked += 1
        if self._timer is None:
            self._start()
        if self._free > 0:
            self._free -= 1
            return True
        self._credit += self.share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def update(self) -> None:
        """Measure the interval since the last update and adjust the share."""
        now, used = self._clock(), self._usage()
        last, self._last = self._last, (now, used)
        if last is None or now <= last[0]:
            return
        self.busy = min(1.0, (used - last[1]) / (now - last[0]))
        if self.busy > self.limit:
            self.share /= 2
        else:
            self.share = min(1.0, self.share + STEP)
        self._free = self._floor

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self) -> None:
        self._last = None
        self.update()  # the starting point
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        if not self._asked:  # idle: stop measuring, start afresh on the next copy
            self._timer = None
            self.share, self._credit, self._free = 1.0, 0.0, self._floor
            return
        self._asked = 0
        self.update()
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)
