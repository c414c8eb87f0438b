"""How the gateway hands its copies to the shadow worker: batched over loop turns, in a frame
at most every `flush_every` seconds, at once when the bodies batched reach BATCH_BYTES.

The worker here is tests/support/shadow_recorder.py, which records each frame's copies.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config.routes import Route, Upstream
from gateway.config.table import parse
from gateway.shadow.mirror import Copy
from gateway.shadow.store import create_store
from gateway.shadow.worker import BATCH_BYTES, WorkerMirror

pytestmark = pytest.mark.anyio

ROUTES = """\
upstreams:
  legacy: {{url: "http://127.0.0.1:9"}}
  search: {{url: "http://127.0.0.1:9"}}
default: legacy
auth: {{default: none}}
authz: none
shadow_store: {{url: "sqlite:///{store}"}}
shadow_worker: {{mode: process, busy_limit: 100%}}
routes:
  - name: search
    path: /search
    upstream: legacy
    shadow: {{upstream: search}}
"""


@dataclass
class Recorded:
    """A `WorkerMirror` whose worker records its frames, and the route it copies."""

    mirror: WorkerMirror
    route: Route
    primary: Upstream
    candidate: Upstream
    out: Path

    async def launch(self, body: bytes = b"{}") -> None:
        """One sampled request of /search, copied, in a loop turn of its own."""
        assert self.mirror.admit(self.route)
        self.mirror.launch(
            Copy(
                self.route,
                self.primary,
                self.candidate,
                "GET",
                "/search",
                b"/search",
                [(b"host", b"gateway")],
                None,
                200,
                [(b"content-type", b"application/json")],
                body,
                False,
                1.0,
            )
        )
        await asyncio.sleep(0)

    async def frames(self) -> list[int]:
        """The copies in each frame, once the mirror is closed (the worker then exits)."""
        await self.mirror.close()
        sizes: list[int] = json.loads(self.out.read_text())
        return sizes


def recorded(tmp_path: Path, flush_every: float) -> Recorded:
    table = parse(ROUTES.format(store=tmp_path / "shadow.db").encode())
    mirror = WorkerMirror(
        create_store(table.shadow_store.url), table.shadow_store, table.shadow_worker
    )
    out = tmp_path / "frames.json"
    mirror.command = [sys.executable, "-m", "tests.support.shadow_recorder", str(out)]
    mirror.flush_every = flush_every
    (route,) = table.routes
    return Recorded(mirror, route, table.upstreams["legacy"], table.upstreams["search"], out)


async def test_copies_of_several_loop_turns_travel_in_one_frame(tmp_path: Path) -> None:
    recorder = recorded(tmp_path, flush_every=60.0)  # no frame on the timer in this test
    for _ in range(5):
        await recorder.launch()
    assert await recorder.frames() == [5]  # sent by close's drain, not once per turn


async def test_a_batch_whose_bodies_reach_the_limit_is_sent_at_once(tmp_path: Path) -> None:
    recorder = recorded(tmp_path, flush_every=60.0)
    big = b"x" * (BATCH_BYTES // 2)
    for _ in range(5):
        await recorder.launch(big)
    assert await recorder.frames() == [2, 2, 1]  # the last one waits for close


async def test_a_batch_is_sent_on_the_timer_without_anyone_asking(tmp_path: Path) -> None:
    recorder = recorded(tmp_path, flush_every=0.001)
    await recorder.launch()
    await recorder.launch()
    deadline = asyncio.get_running_loop().time() + 30
    # the worker reports each frame's copies as mirrored: they arrive with no flush or close
    while sum(s.mirrored for s in recorder.mirror.stats.values()) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the batch was never sent"
        await asyncio.sleep(0.01)
    assert await recorder.frames() in ([2], [1, 1])
