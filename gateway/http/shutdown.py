"""How `gateway serve` stops: bounded in time, and with exit status 0 after SIGTERM.

Kubernetes stops a pod with SIGTERM and kills it with SIGKILL after the pod's
`terminationGracePeriodSeconds`, 30 s by default. On SIGTERM (or Ctrl-C) uvicorn's
`Server.shutdown`:

1. stops accepting connections and asks every open connection to close once its current
   response is sent (idle keep-alive connections close at once);
2. waits for the requests in flight, at most `--shutdown-timeout` seconds
   (DEFAULT_SHUTDOWN_TIMEOUT, 20 s), then cancels those still running: their clients'
   connections are closed;
3. runs the lifespan shutdown (gateway/app.py): the shadow worker is drained and stopped
   (at most SHADOW_CLOSE_TIMEOUT, 5 s: comparisons still running then are dropped), the
   promotion evidence saved, the access log flushed.

20 s for the requests and 5 s for the shadow comparisons fit Kubernetes' default grace with
room to spare. A longer `--shutdown-timeout` needs a longer grace period in the pod spec.

The exit status: after a graceful shutdown, uvicorn (0.29 and later, `Server.capture_signals`)
restores the handlers it found and raises the captured signal again, so that the process
ends "killed by SIGTERM", status 143, which a supervisor counts as a failure. A stop that
was asked for and completed is a success: `sigterm_exits_zero` installs the handler uvicorn
restores, which ends the process with status 0 instead. A SIGTERM that arrives before uvicorn
serves (while the routes load) exits 0 the same way: nothing was in flight yet.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

DEFAULT_SHUTDOWN_TIMEOUT = 20.0
SHADOW_CLOSE_TIMEOUT = 5.0


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


@contextmanager
def sigterm_exits_zero() -> Iterator[None]:
    """Within the block, SIGTERM ends the process with status 0 (see the module's doc)."""
    previous = signal.signal(signal.SIGTERM, _exit_zero)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
