"""Promotion: move a route one step along legacy -> shadow -> canary -> migrated, or back.

Forward, one step at a time (`strangler routes promote ROUTE`):

    legacy -> shadow     adds `shadow: {upstream: NEW}` (--to NEW); no evidence needed, the
                         monolith still answers every request
    shadow -> canary     `upstream: {MONOLITH: 90, NEW: 10}` (the first of `steps`), the
                         shadow block kept; the gate reads the shadow comparisons
    canary -> canary     the next share of `steps`, and after the last one:
    canary -> migrated   `upstream: NEW`, the shadow block removed; the gate reads the
                         live per-upstream evidence (gateway/rollout/evidence.py)

Back (`strangler routes rollback ROUTE`), at any time and without a gate: migrated ->
canary at the last step, canary -> the previous step, then shadow (`upstream: MONOLITH`,
the shadow block added when missing), shadow -> legacy (the shadow block removed).

The gate, when the route has `promote:`, is asked of the evidence gathered since the route
entered its current state (its epoch, gateway/rollout/evidence.py), never of older evidence:

    shadow   samples = comparisons made, candidate errors included; match = identical
             answers among them (noise-only differences match; bodies too large to compare
             do not); p99 ratio = the candidate's p99 over the primary's
    canary   samples = requests the new service answered; match = its share of non-5xx
             answers relative to the monolith's on the same route (100% = as reliable);
             p99 ratio = its p99 over the monolith's

A route without `promote:` moves without a gate when asked. The edit is made in the file's
text (gateway/rollout/editor.py), validated as a routes file (and its new state checked)
before it is written, and written only when the file has not changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.validation import ConfigError, read
from gateway.config import table as config
from gateway.config.rollout import DEFAULT_STEPS, PromoteGate
from gateway.config.routes import Route
from gateway.config.table import RouteTable
from gateway.rollout.editor import (
    EditError,
    keys,
    remove_key,
    replace_value,
    set_weights,
    write_atomically,
)
from gateway.rollout.evidence import Epoch, EvidenceStore, LiveEvidence
from gateway.shadow.mirror import Mirror
from gateway.shadow.records import RouteSummary
from gateway.shadow.store import ShadowStore

log = logging.getLogger("strangler.promotion")


class PromotionError(Exception):
    """The move cannot be made (unknown route, no next state, the edit would not validate)."""


@dataclass(frozen=True, slots=True)
class Move:
    route: str
    before: str
    after: str
    weights: dict[str, int] | None = None  # the new `upstream:` mapping
    upstream: str | None = None  # or the new single upstream
    add_shadow: str | None = None  # `shadow: {upstream: ...}` when the route has none
    drop_shadow: bool = False
    gated: bool = False  # forward from shadow or canary: asks the gate

    def describe(self) -> str:
        parts = []
        if self.weights:
            total = sum(self.weights.values())
            parts.append(" / ".join(f"{n} {100 * w / total:.0f}%" for n, w in self.weights.items()))
        if self.upstream:
            parts.append(self.upstream if self.add_shadow else f"{self.upstream} only")
        if self.add_shadow:
            parts.append(f"shadow to {self.add_shadow}")
        if self.drop_shadow:
            parts.append("shadow removed")
        return f"{self.before} -> {self.after} ({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class GateCheck:
    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class Judgement:
    source: str  # what the evidence is
    checks: tuple[GateCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def find(table: RouteTable, name: str) -> Route:
    for route in table.routes:
        if route.name == name:
            return route
    raise PromotionError(f"{table.source}: no route named {name!r}")


def forward(table: RouteTable, route: Route, to: str | None = None) -> Move:
    state, name = route.rollout.state, route.name
    if state == "legacy":
        if to is None:
            raise PromotionError(f"route {name!r} is legacy: name the new upstream with --to")
        if to not in table.upstreams or to == route.upstream:
            raise PromotionError(f"--to {to!r}: name another upstream of {table.source}")
        return Move(name, state, "shadow", add_shadow=to)
    if state == "migrated":
        raise PromotionError(f"route {name!r} is migrated already: there is no next state")
    monolith, new = _pair(table, route)
    steps = route.rollout.promote.steps if route.rollout.promote else DEFAULT_STEPS
    gated = route.rollout.promote is not None
    if state == "shadow":
        return Move(name, state, "canary", weights=_shares(monolith, new, steps[0]), gated=gated)
    share = _share(route, new)
    later = [step for step in steps if step > share + 1e-9]
    if later:
        return Move(name, state, "canary", weights=_shares(monolith, new, later[0]), gated=gated)
    return Move(
        name, state, "migrated", upstream=new, drop_shadow=route.shadow is not None, gated=gated
    )


def back(table: RouteTable, route: Route) -> Move:
    state, name = route.rollout.state, route.name
    if state == "legacy":
        raise PromotionError(f"route {name!r} is legacy already: there is no earlier state")
    if state == "shadow":
        return Move(name, state, "legacy", drop_shadow=True)
    monolith, new = _pair(table, route)
    steps = route.rollout.promote.steps if route.rollout.promote else DEFAULT_STEPS
    if state == "migrated":
        return Move(name, state, "canary", weights=_shares(monolith, new, steps[-1]))
    share = _share(route, new)
    earlier = [step for step in steps if step < share - 1e-9]
    if earlier:
        return Move(name, state, "canary", weights=_shares(monolith, new, earlier[-1]))
    add = new if route.shadow is None else None
    return Move(name, state, "shadow", upstream=monolith, add_shadow=add)


def _pair(table: RouteTable, route: Route) -> tuple[str, str]:
    """(the monolith, the one new upstream) of a route that moves between them."""
    monolith = table.rollout.monolith
    if monolith is None:
        raise PromotionError("no monolith is known: set rollout: {monolith: NAME} or default")
    named = {route.upstream, *(n for n, w in route.rollout.weights if w > 0)}
    if route.shadow is not None:
        named.add(route.shadow.upstream)
    new = sorted(named - {monolith})
    if len(new) != 1:
        raise PromotionError(
            f"route {route.name!r} moves between the monolith {monolith!r} and one new "
            f"upstream; it names {', '.join(new) or 'none'}: edit it by hand"
        )
    return monolith, new[0]


def _shares(monolith: str, new: str, share: int) -> dict[str, int]:
    return {monolith: 100 - share, new: share}


def _share(route: Route, new: str) -> float:
    total = sum(w for _, w in route.rollout.weights)
    return 100 * dict(route.rollout.weights).get(new, 0) / total if total else 0.0


def edit(text: str, route: Route, move: Move) -> str:
    """The routes file's text with the move made, layout and comments kept."""
    name = route.name
    if move.weights is not None:
        text = set_weights(text, name, move.weights)
    if move.upstream is not None:
        text = replace_value(text, name, "upstream", move.upstream)
    if move.add_shadow is not None:
        text = replace_value(text, name, "shadow", "{upstream: " + move.add_shadow + "}")
    if move.drop_shadow:
        text = remove_key(text, name, "shadow")
    if "state" in keys(text, name):  # an author's `state:` follows the move
        text = replace_value(text, name, "state", move.after)
    return text


# --- the gate ------------------------------------------------------------------------------


def judge_shadow(gate: PromoteGate, summary: RouteSummary | None, epoch: Epoch) -> Judgement:
    source = f"shadow comparisons since {_when(epoch.started)}"
    samples = summary.compared + summary.candidate_errors if summary else 0
    matched = summary.identical + summary.noise_only if summary else 0
    checks = [_samples(gate, samples, "comparisons")]
    if samples:
        checks.append(_match(gate, 100 * matched / samples, "identical answers"))
    candidate = summary.candidate_ms.p99 if summary else None
    primary = summary.primary_ms.p99 if summary else None
    checks.append(_p99(gate, candidate, primary, "candidate", "primary"))
    return Judgement(source, tuple(checks))


def judge_canary(gate: PromoteGate, epoch: Epoch, monolith: str, new: str) -> Judgement:
    source = f"live traffic since {_when(epoch.started)}"
    ours, theirs = epoch.upstreams.get(new), epoch.upstreams.get(monolith)
    checks = [_samples(gate, ours.requests if ours else 0, f"requests answered by {new}")]
    ok, reference = (ours.ok_pct if ours else None), (theirs.ok_pct if theirs else None)
    if ok is None or not reference:
        checks.append(GateCheck(False, f"match: no answers from both {new} and {monolith} yet"))
    else:
        relative = min(100.0, 100 * ok / reference)
        text = f"non-5xx answers, {new} {ok:.2f}% vs {monolith} {reference:.2f}%"
        checks.append(_match(gate, relative, text))
    checks.append(
        _p99(
            gate,
            ours.percentile(99) if ours else None,
            theirs.percentile(99) if theirs else None,
            new,
            monolith,
        )
    )
    return Judgement(source, tuple(checks))


def _samples(gate: PromoteGate, samples: int, what: str) -> GateCheck:
    ok = samples >= gate.min_samples
    return GateCheck(ok, f"samples {samples} {what} {'>=' if ok else '<'} {gate.min_samples}")


def _match(gate: PromoteGate, match: float, what: str) -> GateCheck:
    ok = match >= gate.min_match
    return GateCheck(ok, f"match {match:.2f}% {'>=' if ok else '<'} {gate.min_match}% ({what})")


def _p99(
    gate: PromoteGate, ours: float | None, theirs: float | None, us: str, them: str
) -> GateCheck:
    if ours is None or theirs is None or theirs <= 0 or math.isinf(ours):
        return GateCheck(False, f"p99 ratio: no latencies of both {us} and {them} yet")
    ratio = ours / theirs
    ok = ratio <= gate.max_p99_ratio
    sign = "<=" if ok else ">"
    return GateCheck(
        ok,
        f"p99 ratio {ratio:.2f} {sign} {gate.max_p99_ratio}"
        f" ({us} {ours:.1f} ms / {them} {theirs:.1f} ms)",
    )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


async def judge(
    table: RouteTable, route: Route, evidence: EvidenceStore, shadow: ShadowStore
) -> Judgement:
    """The gate's verdict on the route's evidence in its current state."""
    gate = route.rollout.promote
    assert gate is not None
    epoch = await asyncio.to_thread(evidence.load, route)
    if epoch is None:
        missing = GateCheck(False, f"no gateway has served route {route.name!r} as it is now yet")
        return Judgement("no evidence", (missing,))
    if route.rollout.state == "shadow":
        summaries = await shadow.summary(route=route.name, since=epoch.started)
        return judge_shadow(gate, summaries[0] if summaries else None, epoch)
    monolith, new = _pair(table, route)
    return judge_canary(gate, epoch, monolith, new)


# --- the whole step, for the CLI and the gateway's `auto` ---------------------------------


@dataclass(frozen=True, slots=True)
class Promotion:
    move: Move
    judgement: Judgement | None  # None: no gate was asked
    written: bool

    def lines(self, source: str) -> list[str]:
        out = [f"route {self.move.route!r}: {self.move.describe()}"]
        if self.judgement is not None:
            out.append(f"  evidence: {self.judgement.source}")
            out += [f"  {'ok  ' if c.ok else 'FAIL'}  {c.text}" for c in self.judgement.checks]
        if self.written:
            out.append(f"{source}: route {self.move.route!r} is now {self.move.after}")
        elif self.judgement is not None and not self.judgement.ok:
            failed = "; ".join(c.text for c in self.judgement.checks if not c.ok)
            out.append(f"not promoted: {failed}")
        return out


async def step(
    path: Path,
    name: str,
    *,
    evidence: EvidenceStore,
    shadow: ShadowStore,
    backwards: bool = False,
    to: str | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Read the file, plan the move, ask the gate, edit, validate, write."""
    data = read(path)
    table = config.parse(data, str(path))
    route = find(table, name)
    move = back(table, route) if backwards else forward(table, route, to)
    judgement = None
    if move.gated and not backwards:
        judgement = await judge(table, route, evidence, shadow)
        if not judgement.ok:
            return Promotion(move, judgement, False)
    try:
        text = edit(data.decode("utf-8"), route, move)
    except EditError as exc:
        raise PromotionError(f"{path}: {exc}") from None
    try:
        edited = find(config.parse(text.encode(), str(path)), name)
    except ConfigError as exc:
        message = f"the edited file would not validate, so it is unchanged\n{exc}"
        raise PromotionError(message) from None
    if edited.rollout.state != move.after:
        raise PromotionError(
            f"the edited route would be {edited.rollout.state}, not {move.after}: edit it by hand"
        )
    if dry_run:
        return Promotion(move, judgement, False)
    if read(path) != data:
        raise PromotionError(f"{path} changed while promoting; nothing was written, try again")
    write_atomically(path, text)
    log.info("route %s: %s (%s)", name, move.describe(), path)
    return Promotion(move, judgement, True)


class Promoter:
    """In the gateway's watch loop: save the evidence every `rollout.interval` and promote
    the routes whose gate says `auto: true` when their evidence meets it."""

    def __init__(
        self,
        path: Path,
        live: LiveEvidence,
        evidence: EvidenceStore,
        mirror: Mirror,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.live = live
        self.evidence = evidence
        self.mirror = mirror
        self._clock = clock
        self._last: float | None = None

    async def save(self) -> bool:
        """Save this process's epochs; False when there are none or the store failed."""
        if not self.live.epochs:
            return False  # no shadow or canary route: the store is not even opened
        try:
            await asyncio.to_thread(self.evidence.save, self.evidence.rows(self.live))
        except Exception:
            log.exception("could not save the rollout evidence")
            return False
        return True

    async def tick(self, table: RouteTable) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < table.rollout.interval:
            return
        self._last = now
        if not await self.save():
            return
        automatic = [
            route
            for route in table.routes
            if route.rollout.promote is not None
            and route.rollout.promote.auto
            and route.rollout.state in ("shadow", "canary")
        ]
        if automatic:
            await self.mirror.flush()  # the comparisons made so far count
        for route in automatic:
            try:
                outcome = await step(
                    self.path, route.name, evidence=self.evidence, shadow=self.mirror.store
                )
            except (PromotionError, ConfigError, OSError) as exc:
                log.warning("auto promotion of route %s: %s", route.name, exc)
                continue
            level = logging.INFO if outcome.written else logging.DEBUG
            log.log(level, "auto promotion: %s", " | ".join(outcome.lines(str(self.path))))
            if outcome.written:
                return  # the watcher reloads the file before anything else moves
