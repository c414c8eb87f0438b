"""A circuit breaker per upstream: a pure state machine with an injected clock.

gobreaker's and resilience4j's semantics:

    closed --(failure rate >= threshold over the window, with >= minimum calls)--> open
    open --(cool-down passed; the next call asks)--> half-open
    half-open --(`probes` calls all succeed)--> closed (a fresh window)
    half-open --(a probe fails)--> open (a fresh cool-down)

Closed lets every call through and counts outcomes in a sliding time window, judging the
failure rate after every call once the window holds the minimum (resilience4j). Open rejects
every call at once (the caller answers 503 with Retry-After). Half-open lets `probes`
calls through, one at a time or together, and rejects the rest. Each permission is a ticket
naming the state's generation: an outcome that arrives after the state changed belongs to
an earlier generation and is ignored, so a slow call started while closed cannot close or
reopen a half-open breaker (gobreaker's generations).

A closed breaker's success path runs on every request, so it adds one to a counter and
compares it with a precomputed trip point: successes are folded into the window when it
advances (the owner's timer) and whenever a call is judged, so every judgement sees exact
counts. No clock is read on that path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.config.resilience import BreakerSettings
from gateway.resilience.window import SlidingCounts


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module constants: an Enum member looked up on its class costs more than the rest of a
# closed breaker's bookkeeping, which runs on every request.
CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
_NEVER = 2**62


@dataclass
class BreakerStats:
    """Counters since the breaker was made (read at scrape time)."""

    opened: int = 0  # transitions to open
    rejected: int = 0  # calls refused while open or with the half-open probes taken
    successes: int = 0
    failures: int = 0


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.state = CLOSED
        self.generation = 0
        self.window = SlidingCounts(settings.window)  # marked: failures
        self.stats = BreakerStats()
        self._opened_at = 0.0
        self._probing = 0  # half-open probes let through and not yet judged
        self._passed = 0  # half-open probes that succeeded
        self._successes = 0  # closed: successes not yet folded into the window
        self._trip_at = _NEVER  # ... and how many of them would trip it (see _rearm)

    def allow(self) -> int | None:
        """A ticket for one call, or None when the call must be rejected."""
        if self.state is CLOSED:
            return self.generation
        if self.state is OPEN:
            if self.clock() < self._opened_at + self.settings.cool_down:
                self.stats.rejected += 1
                return None
            self._enter(HALF_OPEN)
        if self._probing + self._passed >= self.settings.probes:
            self.stats.rejected += 1
            return None
        self._probing += 1
        return self.generation

    def record(self, ticket: int, success: bool) -> None:
        """The outcome of the call `ticket` was given for."""
        if success and ticket == self.generation and self.state is CLOSED:
            self._successes += 1  # the fast path
            if self._successes >= self._trip_at:
                self._judge()
            return
        if success:
            self.stats.successes += 1
        else:
            self.stats.failures += 1
        if ticket != self.generation:
            return
        if self.state is CLOSED:
            self._fold()
            self.window.advance(self.clock())
            self.window.add(1, 1)
            self._judge()
        elif self.state is HALF_OPEN:
            self._probing -= 1
            if not success:
                self._enter(OPEN)
            else:
                self._passed += 1
                if self._passed >= self.settings.probes:
                    self._enter(CLOSED)

    def cancel(self, ticket: int) -> None:
        """The call was given up without an outcome (say the client left): free its probe."""
        if ticket == self.generation and self.state is HALF_OPEN:
            self._probing -= 1

    def advance(self, now: float) -> None:
        """Fold the successes counted since into the window, then move it to `now`."""
        self._fold()
        self.window.advance(now)
        self._rearm()

    def _fold(self) -> None:
        if self._successes:
            self.window.add(self._successes)
            self.stats.successes += self._successes
            self._successes = 0

    def _judge(self) -> None:
        """Closed: open when the window is past the threshold (resilience4j's check)."""
        self._fold()
        window = self.window
        if (
            window.total >= self.settings.minimum_calls
            and window.marked >= self.settings.failure_rate * window.total
        ):
            self._enter(OPEN)
        else:
            self._rearm()

    def _rearm(self) -> None:
        """How many more successes would trip the breaker: a success only lowers the
        failure rate, so only the one that brings the window up to the minimum can, and
        only if the rate is still past the threshold with it."""
        window = self.window
        need = max(1, self.settings.minimum_calls - window.total)
        past = window.marked >= self.settings.failure_rate * (window.total + need)
        self._trip_at = need if window.marked and past else _NEVER

    def current(self) -> State:
        """The state a call arriving now meets (open turns half-open once cooled down)."""
        if self.state is OPEN and self.clock() >= self._opened_at + self.settings.cool_down:
            return HALF_OPEN
        return self.state

    def retry_after(self) -> float:
        """Seconds a rejected caller should wait before trying again."""
        if self.state is OPEN:
            return max(0.0, self._opened_at + self.settings.cool_down - self.clock())
        return 1.0  # half-open with every probe taken: they are judged within a request

    def failure_rate(self) -> float:
        self.advance(self.clock())
        return self.window.marked / self.window.total if self.window.total else 0.0

    def _enter(self, state: State) -> None:
        self.state = state
        self.generation += 1
        self._probing = self._passed = 0
        if state is OPEN:
            self._opened_at = self.clock()
            self.stats.opened += 1
        elif state is CLOSED:
            self.window.clear()
            self._successes = 0
            self._rearm()
