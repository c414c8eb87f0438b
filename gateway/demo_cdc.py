"""The demo's CDC steps: the search service's database fed by the bridge, not a backfill.

`strangler cdc run --embedded` runs as one more child process of the demo: librdkafka's mock
cluster in that process, the SQLite dev capture (the development stand-in for Debezium)
relaying the monolith's row changes onto it, and the same consumer code as in production.
The search service's database starts empty and is filled from a snapshot (`op: r`); a write
made through the gateway on the monolith then reaches the new service's `/search` through
the same path, which the demo times against `SYNC_DEADLINE_SECONDS`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

SNAPSHOT_DEADLINE_SECONDS = 60.0
SYNC_DEADLINE_SECONDS = 1.0  # the promise: a write shows up in the new service's /search


class StepError(Exception):
    """A CDC step failed; the demo reports it as its current step's failure."""


class Stack(Protocol):
    """What the steps need of the demo: its child processes and an HTTP client."""

    def start(self, work: Path, name: str, argv: list[str]) -> None: ...

    def send(
        self, method: str, path: str, body: dict[str, object] | None, roles: list[str]
    ) -> tuple[int, bytes]: ...


def start_bridge(stack: Stack, work: Path, legacy_db: str, search_db: str) -> Path:
    """Start `strangler cdc run --embedded` on the two databases; return its status file."""
    status = work / "cdc-status.json"
    stack.start(
        work,
        "cdc",
        [
            sys.executable,
            "-m",
            "gateway.cli",
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
    raise StepError(
        f"the CDC snapshot did not fill the search database within {SNAPSHOT_DEADLINE_SECONDS:.0f}s"
    )


def _search(stack: Stack, words: str) -> list[dict[str, object]]:
    status, body = stack.send("GET", f"/search?q={urllib.parse.quote(words)}", None, [])
    if status != 200:
        raise StepError(f"/search answered {status}: {body[:200]!r}")
    results: list[dict[str, object]] = json.loads(body)["results"]
    return results


def _until_searchable(stack: Stack, words: str, name: str) -> float:
    started = time.monotonic()
    while True:
        found = [r for r in _search(stack, words) if r["name"] == name]
        elapsed = time.monotonic() - started
        if found:
            return elapsed
        if elapsed > SYNC_DEADLINE_SECONDS:
            raise StepError(
                f"{name!r} was not in the new service's /search within "
                f"{SYNC_DEADLINE_SECONDS:.0f}s of the monolith's answer"
            )
        time.sleep(0.01)  # polling the endpoint under test, with a deadline


def write_and_find(stack: Stack) -> None:
    """Create and then rename a product on the monolith, through the gateway as an admin,
    and time how long each takes to show up in the new service's /search."""
    word = f"Demo{secrets.token_hex(3)}"
    name = f"{word} Lamp"
    product: dict[str, object] = {"name": name, "price": "19.99", "category": "lighting"}
    status, body = stack.send("POST", "/products", product, ["admin"])
    if status != 201:
        raise StepError(f"POST /products answered {status}: {body[:200]!r}")
    product_id = json.loads(body)["id"]
    print(f"    POST /products -> 201, product {product_id} {name!r} (the monolith's database)")
    print(
        f"    found by the new service's /search after {_until_searchable(stack, word, name):.3f}s"
    )
    renamed = f"{word} Reading Lamp"
    status, body = stack.send(
        "PUT", f"/products/{product_id}", {**product, "name": renamed}, ["admin"]
    )
    if status != 200:
        raise StepError(f"PUT /products/{product_id} answered {status}: {body[:200]!r}")
    print(f"    PUT /products/{product_id} -> 200, renamed {renamed!r}")
    print(f"    the rename is in /search after {_until_searchable(stack, word, renamed):.3f}s")
