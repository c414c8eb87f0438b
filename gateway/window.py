"""A sliding time window of two counts (all events, and the marked ones among them).

The window is `span` seconds cut into `buckets` equal buckets; counts older than the window
fall out a bucket at a time, so the window covers between `span - span/buckets` and `span`
seconds of history (resilience4j's and Finagle's windows are bucketed the same way). The
running sums are kept up to date as buckets expire, so reading them is O(1). Time is passed
in by the caller (`now`, seconds on any monotonic clock), which keeps this pure.
"""

from __future__ import annotations


class SlidingCounts:
    __slots__ = ("_counts", "_marked", "_newest", "_width", "marked", "total")

    def __init__(self, span: float, buckets: int = 10) -> None:
        self._width = span / buckets
        self._counts = [0] * buckets
        self._marked = [0] * buckets
        self._newest = 0  # index (time // width) of the newest bucket
        self.total = 0  # events in the window
        self.marked = 0  # marked events in the window

    def add(self, now: float, marked: bool = False) -> None:
        slot = int(now // self._width)
        if slot > self._newest:
            self.advance(now)
        i = self._newest % len(self._counts)
        self._counts[i] += 1
        self.total += 1
        if marked:
            self._marked[i] += 1
            self.marked += 1

    def advance(self, now: float) -> None:
        """Drop the buckets that have fallen out of the window at `now`."""
        slot = int(now // self._width)
        if slot <= self._newest:
            return
        size = len(self._counts)
        for expired in range(self._newest + 1, min(slot, self._newest + size) + 1):
            i = expired % size
            self.total -= self._counts[i]
            self.marked -= self._marked[i]
            self._counts[i] = self._marked[i] = 0
        self._newest = slot

    def clear(self) -> None:
        for i in range(len(self._counts)):
            self._counts[i] = self._marked[i] = 0
        self.total = self.marked = 0
