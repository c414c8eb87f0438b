"""The CDC bridge's one error hierarchy.

    CdcError
    ├── EventError          one Kafka message cannot be applied (unparseable, unmappable,
    │                       violating a constraint); carries its origin (topic, partition,
    │                       offset) and goes to the dead-letter topic, the bridge moves on
    ├── MappingError        the mapping file was rejected; `issues` lists every problem with
    │                       its line (as routes.yaml's validator does)
    └── SinkUnavailable     the target database cannot be reached or is locked; the batch is
                            retried with backoff and no offset is committed meanwhile

Foreign errors (json, base64, SQLAlchemy's DBAPIError, KafkaException) are translated into
these where they happen, so the consumer loop has three things to tell apart.
"""

from __future__ import annotations

from typing import NamedTuple

from common.validation import ConfigIssue, describe


class Origin(NamedTuple):
    """Where a message came from: enough to find it again, and to dead-letter it. (A
    NamedTuple: one is made per message, at a fifth of a frozen dataclass's cost.)"""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class CdcError(Exception):
    """Anything the CDC bridge reports."""


class EventError(CdcError):
    """A message that cannot be applied: it goes to the dead-letter topic."""

    def __init__(self, origin: Origin, reason: str) -> None:
        self.origin = origin
        self.reason = reason
        super().__init__(f"{origin}: {reason}")


class MappingError(CdcError):
    """A mapping file was rejected; `issues` holds every problem found, with its line."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(describe(source, issues))


class SinkUnavailable(CdcError):
    """The target database is unreachable or busy: retry the same batch later."""
