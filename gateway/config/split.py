"""Weighted targets with sticky, consistent assignment. Pure: no I/O, no clock.

A user is hashed once per route into a point of [0, 2**64) (`Split.point`: BLAKE2b keyed
with the route's name); the route's upstreams
own consecutive intervals of that range in a fixed order (the monolith first, then the
others by name), each as wide as its weight's share. A user's point never changes, so:

- while the weights stay the same the user keeps their upstream, across reloads, restarts
  and replicas (nothing here depends on the process);
- with two upstreams, raising one share moves the boundary between the two intervals, and
  only users between the old and the new boundary change sides, all of them from the
  shrinking upstream to the growing one (no one flips back and forth);
- reordering the mapping in routes.yaml moves no one: the order is not the file's.

With three or more upstreams, changing one share can also shift the intervals of the ones
in the middle; `moves` says exactly who moves where for any edit.

The salt is the route's name, so a route's canary population is independent of another's
(renaming a route draws its users again).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

SPACE = 2**64
_REMEMBERED = 4096  # users whose pick a split keeps, per table (a returning user's is looked up)
_REMEMBERED_KEY = 128  # bytes: longer keys (a long token `sub`) are hashed every time


def assignment_order(names: Iterable[str], monolith: str | None) -> tuple[str, ...]:
    """The fixed order of a split's intervals: the monolith first, then by name."""
    return tuple(sorted(names, key=lambda name: (name != monolith, name)))


@dataclass(frozen=True, slots=True)
class Split:
    """A route's weighted targets, in assignment order; built once per table."""

    weights: tuple[tuple[str, int], ...]
    salt: bytes
    bounds: tuple[int, ...] = ()  # exclusive upper end of each interval, cumulative
    # keyed with the salt once per table; copying it is cheaper than keying it per request
    hasher: hashlib.blake2b = field(
        default_factory=lambda: hashlib.blake2b(digest_size=8), compare=False, repr=False
    )
    picks: dict[bytes, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, weights: dict[str, int], monolith: str | None, salt: bytes) -> Split:
        ordered = tuple((name, weights[name]) for name in assignment_order(weights, monolith))
        total = sum(weight for _, weight in ordered)
        if total <= 0:
            raise ValueError("a split needs at least one weight above 0")
        bounds, cumulative = [], 0
        for _, weight in ordered:
            cumulative += weight
            bounds.append(cumulative * SPACE // total)
        return cls(ordered, salt, tuple(bounds), hashlib.blake2b(digest_size=8, key=salt))

    @property
    def live(self) -> tuple[str, ...]:
        """The upstreams that receive traffic (weight above 0)."""
        return tuple(name for name, weight in self.weights if weight > 0)

    def point(self, key: bytes) -> int:
        """The user's point in [0, 2**64) on this route."""
        hasher = self.hasher.copy()
        hasher.update(key)
        return int.from_bytes(hasher.digest(), "big")

    def pick(self, key: bytes) -> str:
        """The upstream that serves the user `key`: one hash and a search of the bounds, or
        the pick remembered for the user (at most `_REMEMBERED`, forgotten all at once)."""
        name = self.picks.get(key)
        if name is None:
            name = self.weights[bisect_right(self.bounds, self.point(key))][0]
            if len(key) <= _REMEMBERED_KEY:
                if len(self.picks) >= _REMEMBERED:
                    self.picks.clear()
                self.picks[key] = name
        return name

    def intervals(self) -> list[tuple[str, int, int]]:
        """(upstream, low, high) of every non-empty interval."""
        result, low = [], 0
        for (name, _), high in zip(self.weights, self.bounds, strict=True):
            if high > low:
                result.append((name, low, high))
            low = high
        return result


def moves(old: Split, new: Split) -> list[tuple[str, str, float]]:
    """(from, to, share of users) for every pair of upstreams users move between.

    Exact for the two interval layouts (not sampled). When the salts differ (a renamed
    route) users are drawn again, and the shares are those of independent draws.
    """
    moved: dict[tuple[str, str], float] = {}
    if old.salt != new.salt:
        for a, a_low, a_high in old.intervals():
            for b, b_low, b_high in new.intervals():
                if a != b:
                    share = (a_high - a_low) * (b_high - b_low) / SPACE / SPACE
                    moved[(a, b)] = moved.get((a, b), 0.0) + share
    else:
        for a, a_low, a_high in old.intervals():
            for b, b_low, b_high in new.intervals():
                overlap = min(a_high, b_high) - max(a_low, b_low)
                if a != b and overlap > 0:
                    moved[(a, b)] = moved.get((a, b), 0.0) + overlap / SPACE
    return [(a, b, share) for (a, b), share in sorted(moved.items())]
