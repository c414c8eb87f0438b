"""Promotion: the gate both ways on shadow and canary evidence, the edit of routes.yaml in
place, rollbacks, refusals, the command and `auto` in the gateway's loop."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import table as config
from gateway.config.shadow import ShadowStoreSettings
from gateway.rollout import promotion
from gateway.rollout.evidence import EvidenceStore, LiveEvidence, UpstreamEvidence
from gateway.rollout.promotion import Promoter, PromotionError, step
from gateway.shadow.comparer import Comparer
from gateway.shadow.records import Record
from gateway.shadow.sql_store import SqlShadowStore
from gateway.shadow.store import create_store

pytestmark = pytest.mark.anyio

ROUTES = """\
# the migration map
upstreams:
  legacy: {{url: "http://127.0.0.1:8001"}}   # the monolith
  search: {{url: "http://127.0.0.1:8002"}}
default: legacy
auth: {{default: none}}
authz: none
shadow_store: {{url: "sqlite:///{db}"}}
routes:
  - name: search
    path: /search      # being extracted
    upstream: legacy   # the monolith answers
    shadow:
      upstream: search
      compare: {{ignore: [$.took_ms]}}
    promote: {{min_samples: 20, min_match: 95%, max_p99_ratio: 1.5, steps: [10, 50]{auto}}}
  - name: products
    path: /products
    upstream: legacy
"""


@dataclass
class Setup:
    path: Path
    shadow: SqlShadowStore
    evidence: EvidenceStore
    live: LiveEvidence
    now: list[float]

    def serve(self) -> None:
        """What a gateway does with the file: load it, keep or start epochs, save them."""
        self.live.retarget(config.load(self.path))
        self.evidence.save(self.evidence.rows(self.live))

    async def compared(
        self,
        n: int,
        verdict: str = "identical",
        candidate_ms: float = 12.0,
        at: float | None = None,
        error: bool = False,
    ) -> None:
        record = Record(
            at=self.now[0] + 1 if at is None else at,
            route="search",
            method="GET",
            path="/search",
            primary_status=200,
            candidate_status=None if error else 200,
            verdict="candidate_error" if error else verdict,  # type: ignore[arg-type]
            primary_ms=10.0,
            candidate_ms=None if error else candidate_ms,
        )
        await self.shadow.record([record] * n)

    def answered(self, upstream: str, n: int, ms: float, status: int = 200) -> None:
        for _ in range(n):
            self.live.observe("search", upstream, status, ms)
        self.evidence.save(self.evidence.rows(self.live))

    async def promote(self, **options: object) -> promotion.Promotion:
        return await step(
            self.path, "search", evidence=self.evidence, shadow=self.shadow, **options
        )  # type: ignore[arg-type]

    def state(self) -> str:
        return promotion.find(config.load(self.path), "search").rollout.state


def make(tmp_path: Path, auto: str = "") -> Setup:
    db = tmp_path / "shadow.db"
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(db=db, auto=auto))
    shadow = create_store(f"sqlite:///{db}")
    now = [1_000_000.0]
    return Setup(
        path,
        shadow,
        EvidenceStore(shadow.engine, "gw-1", clock=lambda: now[0]),
        LiveEvidence(clock=lambda: now[0]),
        now,
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    made = make(tmp_path)
    yield made
    await made.shadow.close()


async def test_no_evidence_before_a_gateway_served_the_state(setup: Setup) -> None:
    outcome = await setup.promote()
    assert not outcome.written and outcome.judgement is not None
    assert "no gateway has served route 'search' as it is now yet" in outcome.lines("f")[-1]
    assert setup.state() == "shadow"


async def test_the_shadow_gate_both_ways(setup: Setup) -> None:
    setup.serve()
    await setup.compared(50, at=setup.now[0] - 10)  # before this state began: not counted
    await setup.compared(18)
    await setup.compared(1, error=True)
    outcome = await setup.promote()
    assert not outcome.written and setup.state() == "shadow"
    lines = outcome.lines(str(setup.path))
    assert "  FAIL  samples 19 comparisons < 20" in lines
    assert any(line.startswith("  FAIL  match 94.74% < 95.0%") for line in lines)
    assert lines[-1].startswith("not promoted: samples 19 comparisons < 20; match 94.74%")

    await setup.compared(1, verdict="noise_only")  # noise is not a difference
    await setup.compared(20)
    before = setup.path.read_text()
    outcome = await setup.promote()
    assert outcome.written, outcome.lines("f")
    assert outcome.lines("f")[1:5] == [
        f"  evidence: shadow comparisons since {promotion._when(setup.now[0])}",
        "  ok    samples 40 comparisons >= 20",
        "  ok    match 97.50% >= 95.0% (identical answers)",
        "  ok    p99 ratio 1.20 <= 1.5 (candidate 12.0 ms / primary 10.0 ms)",
    ]
    assert setup.state() == "canary"
    after = setup.path.read_text()
    # only the upstream value changed: comments, layout and the shadow block are kept
    assert after == before.replace(
        "upstream: legacy   # the monolith answers",
        "upstream: {legacy: 90, search: 10}   # the monolith answers",
    )


async def test_a_slow_candidate_is_not_promoted(setup: Setup) -> None:
    setup.serve()
    await setup.compared(30, candidate_ms=20.0)
    outcome = await setup.promote()
    assert not outcome.written
    assert "p99 ratio 2.00 > 1.5 (candidate 20.0 ms / primary 10.0 ms)" in outcome.lines("f")[-1]


async def test_the_canary_gate_reads_live_traffic_of_the_current_shares(setup: Setup) -> None:
    setup.path.write_text(
        setup.path.read_text().replace(
            "upstream: legacy   #", "upstream: {legacy: 90, search: 10} #"
        )
    )
    setup.serve()
    setup.answered("legacy", 200, 10.0)
    setup.answered("search", 15, 11.0)
    outcome = await setup.promote()
    assert not outcome.written
    assert "  FAIL  samples 15 requests answered by search < 20" in outcome.lines("f")
    setup.answered("search", 10, 11.0, status=502)  # 15 of 25 fine, the monolith all
    failed = (await setup.promote()).lines("f")
    assert "  FAIL  match 60.00% < 95.0% (non-5xx answers, search 60.00% vs legacy 100.00%)" in (
        failed
    )
    # a new replica's rows add up with this one's
    other = EvidenceStore(setup.shadow.engine, "gw-2", clock=lambda: setup.now[0])
    more = LiveEvidence(clock=lambda: setup.now[0] + 5)
    more.retarget(config.load(setup.path))
    for _ in range(600):
        more.observe("search", "search", 200, 11.0)
    other.save(other.rows(more))
    outcome = await setup.promote()
    assert outcome.written, outcome.lines("f")
    assert outcome.lines("f")[1:5] == [
        f"  evidence: live traffic since {promotion._when(setup.now[0])}",
        "  ok    samples 625 requests answered by search >= 20",
        "  ok    match 98.40% >= 95.0% (non-5xx answers, search 98.40% vs legacy 100.00%)",
        "  ok    p99 ratio 1.10 <= 1.5 (search 11.2 ms / legacy 10.2 ms)",
    ]
    assert setup.state() == "canary" and "{legacy: 50, search: 50}" in setup.path.read_text()
    # the new shares are a new epoch: the evidence at 10% does not count for 50%
    again = await setup.promote()
    assert not again.written and "no gateway has served" in again.lines("f")[-1]
    setup.serve()
    setup.answered("legacy", 100, 10.0)
    setup.answered("search", 100, 10.0)
    final = await setup.promote()
    assert final.written and setup.state() == "migrated"
    text = setup.path.read_text()
    assert "upstream: search #" in text and "shadow:" not in text and "# being extracted" in text


async def test_a_route_moves_the_whole_ladder_and_back_without_a_gate(tmp_path: Path) -> None:
    setup = make(tmp_path)
    text = setup.path.read_text().replace(
        "    promote: {min_samples: 20, min_match: 95%, max_p99_ratio: 1.5, steps: [10, 50]}\n",
        "    state: shadow      # checked against the targets\n",
    )
    setup.path.write_text(text)
    first = await setup.promote()
    assert first.written and first.judgement is None
    assert first.move.describe() == "shadow -> canary (legacy 90% / search 10%)"
    second = await setup.promote()
    assert second.move.describe() == "canary -> migrated (search only, shadow removed)"
    assert setup.state() == "migrated"
    assert "    state: migrated      # checked against the targets\n" in setup.path.read_text()
    with pytest.raises(PromotionError, match="migrated already"):
        await setup.promote()
    backs = []
    for _ in range(3):
        outcome = await setup.promote(backwards=True)
        backs.append(outcome.move.describe())
    assert backs == [
        "migrated -> canary (legacy 90% / search 10%)",
        "canary -> shadow (legacy, shadow to search)",
        "shadow -> legacy (shadow removed)",
    ]
    assert setup.state() == "legacy"
    with pytest.raises(PromotionError, match="with --to"):
        await setup.promote()
    with pytest.raises(PromotionError, match="--to 'nope'"):
        await setup.promote(to="nope")
    assert (
        await setup.promote(to="search")
    ).move.describe() == "legacy -> shadow (shadow to search)"
    assert setup.state() == "shadow"
    assert "# the migration map" in setup.path.read_text()
    await setup.shadow.close()


async def test_an_edit_that_would_not_validate_is_refused(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = setup.path.read_text()
    monkeypatch.setattr(promotion, "edit", lambda text, route, move: text + "routes: 3\n")
    with pytest.raises(PromotionError, match="would not validate, so it is unchanged") as info:
        await setup.promote(backwards=True)
    assert "duplicate key 'routes'" in str(info.value)
    monkeypatch.setattr(promotion, "edit", lambda text, route, move: text)
    with pytest.raises(PromotionError, match="would be shadow, not legacy"):
        await setup.promote(backwards=True)

    def meanwhile(text: str, route: object, move: object) -> str:
        setup.path.write_text(text + "# someone else's edit\n")
        return text.replace(
            "    shadow:\n      upstream: search\n      compare: {ignore: [$.took_ms]}\n", ""
        )

    monkeypatch.setattr(promotion, "edit", meanwhile)
    with pytest.raises(PromotionError, match="changed while promoting"):
        await setup.promote(backwards=True)
    assert setup.path.read_text() == before + "# someone else's edit\n"


async def test_a_dry_run_judges_and_edits_but_writes_nothing(setup: Setup) -> None:
    before = setup.path.read_text()
    outcome = await setup.promote(backwards=True, dry_run=True)
    assert not outcome.written and outcome.move.after == "legacy"
    assert setup.path.read_text() == before


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "routes", *args],
        capture_output=True,
        text=True,
        check=False,
    )


async def test_the_commands(setup: Setup) -> None:
    refused = cli("promote", "search", "--routes", str(setup.path))
    assert refused.returncode == 1
    assert "not promoted: no gateway has served route 'search' as it is now yet" in refused.stdout
    setup.serve()
    await setup.compared(25)
    dry = cli("promote", "search", "--routes", str(setup.path), "--dry-run")
    assert dry.returncode == 0 and "dry run: the edit validates" in dry.stdout
    assert setup.state() == "shadow"
    done = cli("promote", "search", "--routes", str(setup.path))
    assert done.returncode == 0, done.stderr
    assert f"{setup.path}: route 'search' is now canary" in done.stdout
    back = cli("rollback", "search", "--routes", str(setup.path))
    assert back.returncode == 0 and "canary -> shadow" in back.stdout
    unknown = cli("promote", "nope", "--routes", str(setup.path))
    assert unknown.returncode == 1 and "no route named 'nope'" in unknown.stderr
    setup.path.write_text(setup.path.read_text().replace("min_match: 95%", "min_match: 95"))
    broken = cli("promote", "search", "--routes", str(setup.path))
    assert broken.returncode == 1 and f"{setup.path}:16: route 'search': promote" in broken.stderr


@pytest.mark.parametrize("auto", [False, True])
async def test_auto_promotes_in_the_gateways_loop_only_when_asked(
    tmp_path: Path, auto: bool
) -> None:
    setup = make(tmp_path, ", auto: true" if auto else "")
    mirror = Comparer(setup.shadow, ShadowStoreSettings())
    clock = [0.0]
    promoter = Promoter(setup.path, setup.live, setup.evidence, mirror, clock=lambda: clock[0])
    table = config.load(setup.path)
    setup.live.retarget(table)
    await promoter.tick(table)  # saves the epoch; the gate is not met yet
    assert setup.state() == "shadow"
    await setup.compared(30)
    await promoter.tick(table)  # the same clock reading: at most once an interval
    assert setup.state() == "shadow"
    clock[0] += 10.0  # rollout.interval, the default, has passed
    await promoter.tick(table)
    assert setup.state() == ("canary" if auto else "shadow")
    await mirror.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'evidence.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_the_evidence_store_contract(store_url: str, tmp_path: Path) -> None:
    shadow = create_store(store_url)
    try:
        setup = make(tmp_path)
        table = config.load(setup.path)
        route = promotion.find(table, "search")
        one, two = EvidenceStore(shadow.engine, "a"), EvidenceStore(shadow.engine, "b")
        assert one.load(route) is None
        first, second = LiveEvidence(clock=lambda: 200.0), LiveEvidence(clock=lambda: 100.0)
        first.retarget(table)
        second.retarget(table)
        first.observe("search", "legacy", 200, 5.0)
        first.observe("search", "legacy", 503, 50.0)
        second.observe("search", "legacy", 200, 7.0)
        one.save(one.rows(first))
        two.save(two.rows(second))
        one.save(one.rows(first))  # saving again replaces this process's rows
        epoch = one.load(route)
        assert epoch is not None and epoch.started == 100.0
        legacy = epoch.upstreams["legacy"]
        assert (legacy.requests, legacy.errors) == (3, 1)
        assert legacy.percentile(50) == pytest.approx(7.0, rel=0.05)
        assert legacy.percentile(99) == pytest.approx(50.0, rel=0.05)
        # a new shape is a new epoch: the old rows go when it is saved
        setup.path.write_text(
            setup.path.read_text()
            .replace("steps: [10, 50]", "steps: [5]")
            .replace("upstream: legacy   #", "upstream: {legacy: 1, search: 1} #")
        )
        canary = config.load(setup.path)
        first.retarget(canary)
        one.save(one.rows(first))
        assert one.load(route) is None
        loaded = one.load(promotion.find(canary, "search"))
        assert loaded is not None and set(loaded.upstreams) == {"legacy", "search"}
        await setup.shadow.close()
    finally:
        await shadow.close()


def test_latency_buckets_are_within_five_percent() -> None:
    stats = UpstreamEvidence()
    for ms in range(1, 1001):
        stats.observe(200, float(ms))
    assert stats.percentile(99) == pytest.approx(990, rel=0.05)
    assert stats.percentile(50) == pytest.approx(500, rel=0.05)
    assert UpstreamEvidence().percentile(99) is None
    assert UpstreamEvidence.from_row(1, 0, stats.sparse()).buckets == stats.buckets
