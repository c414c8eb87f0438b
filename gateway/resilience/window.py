"""A sliding time window of two counts (all events, and the marked ones among them).

The window is `span` seconds cut into `buckets` equal buckets; counts older than the window
fall out a bucket at a time, so the window covers between `span - span/buckets` and `span`
seconds of history (resilience4j's and Finagle's windows are bucketed the same way).

Counting and moving are apart: `add` counts into the current bucket and reads no clock;
`advance(now)` moves the window to `now` (seconds on any monotonic clock), dropping expired
buckets. The owner advances it on a timer and before any decision that must see fresh
counts. The running sums are kept as buckets expire, so reading them is O(1).
"""

from __future__ import annotations


class SlidingCounts:
    __slots__ = ("_counts", "_current", "_marked", "_newest", "_width", "marked", "total")

    def __init__(self, span: float, buckets: int = 10) -> None:
        self._width = span / buckets
        self._counts = [0] * buckets
        self._marked = [0] * buckets
        self._newest = 0  # index (time // width) of the newest bucket
        self._current = 0  # its position in the lists
        self.total = 0  # events in the window
        self.marked = 0  # marked events in the window

    def add(self, count: int = 1, marked: int = 0) -> None:
        """Count `count` events, `marked` of them marked, into the newest bucket."""
        self._counts[self._current] += count
        self.total += count
        self._marked[self._current] += marked
        self.marked += marked

    def advance(self, now: float) -> None:
        """Move the window to `now`, dropping the buckets that have fallen out of it."""
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
        self._current = slot % size

    def clear(self) -> None:
        for i in range(len(self._counts)):
            self._counts[i] = self._marked[i] = 0
        self.total = self.marked = 0
