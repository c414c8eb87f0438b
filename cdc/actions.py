"""An operator's way past a blocked partition: skip or replay one event by its offset.

Every event the bridge cannot apply should go to the dead-letter topic on its own; this is
for the day something unforeseen still blocks a partition (Kafka Connect's answer is its
`errors.tolerance` settings). `strangler cdc skip TOPIC PARTITION OFFSET` and `strangler
cdc replay TOPIC PARTITION OFFSET` append a request to the actions file next to the
bridge's status file; the running bridge reads it about once a second, and a starting one
before it consumes anything (so a skip also ends a crash loop).

- skip: the message at that offset is never applied: when the bridge meets it (now or in a
  later replay) it counts it as skipped, logs it and commits past it.
- replay: the bridge's consumer goes back to that offset of the partition and consumes
  from there again (once; a partition this bridge does not hold is taken when it is
  assigned). Events already applied are skipped by their source positions, so a replay
  changes only what had been dead-lettered or skipped.

Each request is recorded, with when it was carried out, in the status (`operator`) and
the log.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

KINDS: Final = ("skip", "replay")


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    kind: str  # skip or replay
    topic: str
    partition: int
    offset: int
    requested_at: float

    def describe(self) -> str:
        return f"{self.kind} {self.topic}[{self.partition}]@{self.offset}"

    @classmethod
    def of(cls, data: dict[str, Any]) -> Action:
        action = cls(
            str(data["id"]),
            str(data["kind"]),
            str(data["topic"]),
            int(data["partition"]),
            int(data["offset"]),
            float(data["requested_at"]),
        )
        if action.kind not in KINDS or action.partition < 0 or action.offset < 0:
            raise ValueError(f"not an action: {data!r}")
        return action


def actions_file(status_file: Path) -> Path:
    return status_file.with_name(f"{status_file.stem}.actions.jsonl")


def request(path: Path, kind: str, topic: str, partition: int, offset: int) -> Action:
    """Append one request; the bridge carries it out."""
    action = Action(uuid.uuid4().hex, kind, topic, partition, offset, time.time())
    Action.of(asdict(action))  # the same checks the bridge makes
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(action)) + "\n"
    # One write in append mode: concurrent requests never interleave within a line.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    return action


class Inbox:
    """The requests in an actions file, read again only when the file changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) last read
        self.actions: list[Action] = []
        self.unreadable: list[str] = []  # lines that are not requests (reported, ignored)

    def poll(self) -> bool:
        """Re-read the file if it changed; whether it did."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        actions, unreadable = [], []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                actions.append(Action.of(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                unreadable.append(f"{line[:80]!r}: {exc}")
        self.actions, self.unreadable = actions, unreadable
        return True
