"""What applying a batch came to: counts per topic, the events rejected, the progress."""

from __future__ import annotations

from dataclasses import dataclass

from cdc.batch import Progress
from cdc.errors import EventError


@dataclass(frozen=True, slots=True)
class Counts:
    applied: int = 0  # events whose effect is in the database (coalesced ones included)
    skipped: int = 0  # events older than (or as old as) the row: already reflected
    ignored: int = 0  # truncates not enabled, logical messages, unmapped topics
    truncates: int = 0  # truncate events applied (the table emptied of older rows)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.applied + other.applied,
            self.skipped + other.skipped,
            self.ignored + other.ignored,
            self.truncates + other.truncates,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    topics: dict[str, Counts]
    rejected: tuple[EventError, ...]  # for the dead-letter topic
    progress: dict[str, Progress]  # the newest position and source time per topic

    @property
    def applied(self) -> int:
        return sum(c.applied for c in self.topics.values())

    @property
    def skipped(self) -> int:
        return sum(c.skipped for c in self.topics.values())

    @property
    def ignored(self) -> int:
        return sum(c.ignored for c in self.topics.values())

    @property
    def truncates(self) -> int:
        return sum(c.truncates for c in self.topics.values())


def merge(into: dict[str, Counts], more: dict[str, Counts]) -> None:
    for topic, counts in more.items():
        into[topic] = into.get(topic, Counts()) + counts
