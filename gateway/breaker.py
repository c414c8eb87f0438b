"""A circuit breaker per upstream: a pure state machine, time passed in by the caller.

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
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.resilience_config import BreakerSettings
from gateway.window import SlidingCounts


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module constants: an Enum member looked up on its class costs more than the rest of a
# closed breaker's bookkeeping, which runs on every request.
CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


@dataclass
class BreakerStats:
    """Counters since the breaker was made (read at scrape time)."""

    opened: int = 0  # transitions to open
    rejected: int = 0  # calls refused while open or with the half-open probes taken
    successes: int = 0
    failures: int = 0


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = CLOSED
        self.generation = 0
        self.window = SlidingCounts(settings.window)  # marked: failures
        self.stats = BreakerStats()
        self._opened_at = 0.0
        self._probing = 0  # half-open probes let through and not yet judged
        self._passed = 0  # half-open probes that succeeded

    def allow(self, now: float) -> int | None:
        """A ticket for one call, or None when the call must be rejected."""
        if self.state is CLOSED:
            return self.generation
        if self.state is OPEN:
            if now < self._opened_at + self.settings.cool_down:
                self.stats.rejected += 1
                return None
            self._enter(HALF_OPEN, now)
        if self._probing + self._passed >= self.settings.probes:
            self.stats.rejected += 1
            return None
        self._probing += 1
        return self.generation

    def record(self, ticket: int, success: bool, now: float) -> None:
        """The outcome of the call `ticket` was given for."""
        if success:
            self.stats.successes += 1
        else:
            self.stats.failures += 1
        if ticket != self.generation:
            return
        if self.state is CLOSED:
            window = self.window
            window.add(now, not success)
            if (
                window.total >= self.settings.minimum_calls
                and window.marked >= self.settings.failure_rate * window.total
            ):
                self._enter(OPEN, now)
        elif self.state is HALF_OPEN:
            self._probing -= 1
            if not success:
                self._enter(OPEN, now)
            else:
                self._passed += 1
                if self._passed >= self.settings.probes:
                    self._enter(CLOSED, now)

    def cancel(self, ticket: int) -> None:
        """The call was given up without an outcome (say the client left): free its probe."""
        if ticket == self.generation and self.state is HALF_OPEN:
            self._probing -= 1

    def current(self, now: float) -> State:
        """The state a call arriving at `now` meets (open turns half-open once cooled down)."""
        if self.state is OPEN and now >= self._opened_at + self.settings.cool_down:
            return HALF_OPEN
        return self.state

    def retry_after(self, now: float) -> float:
        """Seconds a rejected caller should wait before trying again."""
        if self.state is OPEN:
            return max(0.0, self._opened_at + self.settings.cool_down - now)
        return 1.0  # half-open with every probe taken: they are judged within a request

    def failure_rate(self, now: float) -> float:
        self.window.advance(now)
        return self.window.marked / self.window.total if self.window.total else 0.0

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self.generation += 1
        self._probing = self._passed = 0
        if state is OPEN:
            self._opened_at = now
            self.stats.opened += 1
        elif state is CLOSED:
            self.window.clear()
