"""A histogram counted in plain ints, cheap enough for the request path.

Observing is one `bisect` and two additions; nothing is cumulated, labelled or locked until
someone reads it (a Prometheus scrape, a dashboard poll). Bucket bounds are inclusive upper
bounds (Prometheus' `le`): a value equal to a bound counts in that bound's bucket.
"""

from __future__ import annotations

from bisect import bisect_left

# Seconds. Prometheus' default buckets start at 5 ms; a proxy's own overhead is well below
# that, so two finer bounds come first.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        """Count `other`'s observations here too (same bounds)."""
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, count)."""
        result = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            result.append((bound, running))
        return result
