"""The demo's CDC parts: the bridge that fills the search database, and step 4's write.

`strangler cdc run --embedded` runs as one more child process of the demo: librdkafka's mock
cluster in that process, the SQLite dev capture (the development stand-in for Debezium)
relaying the monolith's row changes onto it, and the same consumer code as in production.
The search service's database starts empty and is filled from a snapshot (`op: r`).

Step 4: a user whom the canary sends to the new service writes a product through the
gateway (the monolith answers writes) and searches for it at once; the write then reaches
the new service's `/search` through CDC, timed against the stack's sync deadline
(`SYNC_DEADLINE_SECONDS` on the embedded stack; Debezium's path in compose is longer).
Against a running stack the same step runs on its own CDC path (Debezium, Kafka, the bridge).
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

from demo.client import Client, Reply, Tokens
from demo.progress import StepFailed, StepLog

SNAPSHOT_DEADLINE_SECONDS = 60.0
SYNC_DEADLINE_SECONDS = 1.0  # the promise: a write shows up in the new service's /search
# A running stack's path: Debezium reads the WAL, Kafka, the bridge's batches.
RUNNING_SYNC_DEADLINE_SECONDS = 10.0


class Stack(Protocol):
    """What starting the bridge needs of the demo's stack: a child process started."""

    def spawn(self, name: str, argv: list[str]) -> None: ...


def start_bridge(stack: Stack, work: Path, legacy_db: str, search_db: str) -> Path:
    """Start `strangler cdc run --embedded` on the two databases; return its status file."""
    status = work / "cdc-status.json"
    stack.spawn(
        "cdc",
        [
            sys.executable,
            "-m",
            "cli",
            "cdc",
            "run",
            "--embedded",
            "--source-database-url",
            legacy_db,
            "--database-url",
            search_db,
            "--status-file",
            str(status),
        ],
    )
    return status


def _count(database_url: str, table: str) -> int | None:
    path = make_url(database_url).database
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as connection:
            (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    except sqlite3.Error:
        return None  # not created yet, or locked for a moment
    return int(count)


def wait_snapshot(legacy_db: str, search_db: str, alive: Callable[[], None]) -> tuple[int, float]:
    """Wait until the snapshot filled the search database; (documents, seconds)."""
    started = time.monotonic()
    wanted = _count(legacy_db, "products")
    while time.monotonic() - started < SNAPSHOT_DEADLINE_SECONDS:
        alive()
        if wanted is not None and _count(search_db, "search_documents") == wanted:
            return wanted, time.monotonic() - started
        time.sleep(0.05)  # polling a database for a condition, with a deadline
    raise StepFailed(
        f"the CDC snapshot did not fill the search database within {SNAPSHOT_DEADLINE_SECONDS:.0f}s"
    )


@dataclass(frozen=True, slots=True)
class Read:
    answer: Reply
    found: bool  # the product just written is in the answer


def read_your_writes(progress: StepLog, first: Read) -> None:
    """Step 4's promise: a user's first search after their write includes it (the gateway
    pins the writer's reads to the monolith until the bridge has applied the write)."""
    if not first.found:
        raise StepFailed(f"{first.answer.upstream} answered without the write")
    progress.say(f"read-your-writes holds: {first.answer.upstream} answered, with it")


def write_then_search(
    client: Client, tokens: Tokens, progress: StepLog, user: str, new: str, deadline: float
) -> None:
    """As `user` (whom the split sends to `new`): create a product through the gateway on
    the monolith, search for it at once, then time how long the new service takes to find
    it, and the same for a rename."""
    token = tokens.of(user, "admin", "buyer")  # product writes need the admin role
    word = f"Demo{secrets.token_hex(3)}"
    name = f"{word} Lamp"
    product: dict[str, object] = {"name": name, "price": "19.99", "category": "lighting"}
    answer = client.send("POST", "/products", product, token)
    if answer.status != 201:
        raise StepFailed(f"POST /products answered {answer.brief()}")
    product_id = answer.json()["id"]
    progress.say(
        f"{user}: POST /products -> 201 from {answer.upstream}: product {product_id} {name!r}"
    )
    first = _search(client, token, word, name)
    progress.say(
        f"{user}: GET /search?q={word} at once -> {first.answer.upstream}, "
        f"{'with' if first.found else 'without'} the new product"
    )
    read_your_writes(progress, first)
    seconds = _until_found(client, token, word, name, new, deadline)
    progress.say(f"the new service's /search finds it {seconds:.3f}s after the write's answer")
    renamed = f"{word} Reading Lamp"
    answer = client.send("PUT", f"/products/{product_id}", {**product, "name": renamed}, token)
    if answer.status != 200:
        raise StepFailed(f"PUT /products/{product_id} answered {answer.brief()}")
    progress.say(f"{user}: PUT /products/{product_id} -> 200, renamed {renamed!r}")
    seconds = _until_found(client, token, word, renamed, new, deadline)
    progress.say(f"the rename is in the new service's /search after {seconds:.3f}s")


def _search(client: Client, token: str, word: str, name: str) -> Read:
    answer = client.get(f"/search?q={urllib.parse.quote(word)}", token)
    if answer.status != 200:
        raise StepFailed(f"/search answered {answer.brief()}")
    return Read(answer, any(r["name"] == name for r in answer.json()["results"]))


def _until_found(
    client: Client, token: str, word: str, name: str, new: str, deadline: float
) -> float:
    started = time.monotonic()
    while True:
        read = _search(client, token, word, name)
        elapsed = time.monotonic() - started
        if read.found and read.answer.upstream == new:
            return elapsed
        if elapsed > deadline:
            raise StepFailed(
                f"{name!r} was not in {new}'s /search within {deadline:g}s of the "
                "monolith's answer: is the CDC bridge running?"
            )
        time.sleep(0.01)  # polling the endpoint under test, with a deadline
