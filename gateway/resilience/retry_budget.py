"""How many retries an upstream may get: a budget over a sliding window, and the backoff.

Per-request attempt caps alone let retries multiply load during an outage: with 3 attempts
each, a failing upstream sees 3x its traffic exactly when it can least take it. A budget
bounds retries to a share of the requests sent over the last `window` seconds, plus a small
allowance per second so a quiet upstream can still retry (Finagle's RetryBudget: ratio and
minRetriesPerSec over a TTL; Envoy's retry_budget is the same idea over concurrency).

Backoff is exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"): the n-th retry waits uniform(0, min(cap, base * 2**(n-1))), which spreads the
retries of many clients instead of synchronising them.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.resilience import RetrySettings
from gateway.resilience.window import SlidingCounts

WINDOW = 10.0  # seconds, Finagle's default TTL


@dataclass
class RetryStats:
    retried: int = 0  # retries sent
    denied: int = 0  # retries the budget refused


class RetryBudget:
    """Requests are not counted here one by one (that would run on every request): the
    owner passes its running total of requests to `advance`, on a timer, and to
    `withdraw`, which folds the requests since into the window before it decides."""

    def __init__(self, settings: RetrySettings, window: float = WINDOW) -> None:
        self.settings = settings
        self._allowance = settings.min_per_second * window
        self._window = SlidingCounts(window)  # total: requests and retries; marked: retries
        self._requests = 0  # the owner's running total, as last folded in
        self.stats = RetryStats()

    def advance(self, now: float, requests: int) -> None:
        """Fold in the requests since the last call (`requests`: the running total)."""
        self._window.add(requests - self._requests)
        self._requests = requests
        self._window.advance(now)

    def withdraw(self, now: float, requests: int) -> bool:
        """True, and the retry is counted, when the budget has room for one more."""
        self.advance(now, requests)
        window = self._window
        requests = window.total - window.marked
        if window.marked + 1 > self.settings.budget * requests + self._allowance:
            self.stats.denied += 1
            return False
        window.add(1, 1)
        self.stats.retried += 1
        return True


def backoff(settings: RetrySettings, retry: int, uniform: float) -> float:
    """The wait before retry number `retry` (1-based); `uniform` is a draw from [0, 1)."""
    return uniform * min(settings.max_backoff, settings.backoff * 2.0 ** (retry - 1))
