"""What the shadow store keeps (a `Record` per compared request) and gives back (a
`RouteSummary` per route). Plain data, shared by the port, its adapter and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from gateway.shadow.differ import Difference, Verdict

# A comparison's verdict, or the candidate failed and nothing was compared.
Recorded = Verdict | Literal["candidate_error"]
COMPARED: tuple[Recorded, ...] = get_args(Verdict)


@dataclass(frozen=True, slots=True)
class Record:
    at: float  # epoch seconds, from the gateway's clock
    route: str
    method: str
    path: str  # normalised request path
    primary_status: int
    candidate_status: int | None  # None when the candidate failed or was not asked
    verdict: Recorded
    differences: Sequence[Difference] = ()  # Comparison.differences
    noisy: Sequence[Difference] = ()  # Comparison.noisy: on learned noisy paths
    primary_ms: float = 0.0
    candidate_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FieldCount:
    path: str  # generalised: $.results[*].price
    kind: str
    count: int  # comparisons with this difference
    example: Difference  # the latest one recorded


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None  # nearest-rank percentiles, milliseconds; None without samples
    p99: float | None


@dataclass(frozen=True, slots=True)
class RouteSummary:
    route: str
    mirrored: int  # compared + candidate_errors + dropped
    compared: int  # identical + different + noise_only + status_only
    identical: int
    different: int
    noise_only: int
    status_only: int
    candidate_errors: int
    drops: Mapping[str, int]  # reason -> copies dropped, the reasons with any
    top_differences: tuple[FieldCount, ...]
    top_noisy: tuple[FieldCount, ...]
    primary_ms: Latency
    candidate_ms: Latency

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def identical_pct(self) -> float:
        return 100.0 * self.identical / self.compared if self.compared else 0.0

    @property
    def differing_pct(self) -> float:
        return 100.0 * self.different / self.compared if self.compared else 0.0
