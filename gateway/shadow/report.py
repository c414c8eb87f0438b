"""The shadow report, as text (`strangler shadow report`) and JSON (`GET /_strangler/shadow`).

Pure formatting of `RouteSummary`s. Percentages are shares of the compared requests;
field counts are the number of comparisons in which that field differed. The copies dropped
are shown in all and by reason (`gateway.shadow.mirror.DROP_REASONS`, or "unknown" for the ones
stored before reasons were), the most frequent first, only the reasons with a count.
"""

from __future__ import annotations

from typing import Any

from gateway.shadow.differ import Difference
from gateway.shadow.records import FieldCount, Latency, RouteSummary

NO_DATA = "no shadow comparisons recorded"


def format_report(summaries: list[RouteSummary]) -> str:
    if not summaries:
        return NO_DATA + "\n"
    return "\n".join(_route_text(summary) for summary in summaries)


def report_json(summaries: list[RouteSummary]) -> dict[str, Any]:
    return {"routes": [_route_json(summary) for summary in summaries]}


def _route_text(s: RouteSummary) -> str:
    lines = [
        f"route {s.route}",
        f"  mirrored          {s.mirrored:>8}",
        f"  compared          {s.compared:>8}",
        f"  identical         {s.identical:>8}  ({s.identical_pct:.1f}%)",
        f"  differing         {s.different:>8}  ({s.differing_pct:.1f}%)",
        f"  noise only        {s.noise_only:>8}",
        f"  status only       {s.status_only:>8}  (bodies too large to compare)",
        f"  candidate errors  {s.candidate_errors:>8}",
        f"  dropped           {s.dropped:>8}",
        *(f"    {reason:<16}{count:>8}" for reason, count in _drops(s)),
        f"  latency ms        primary {_latency(s.primary_ms)}, shadow {_latency(s.candidate_ms)}",
    ]
    for title, fields in (
        ("top differing fields", s.top_differences),
        ("noisy fields", s.top_noisy),
    ):
        if fields:
            lines.append(f"  {title} (comparisons, kind, field, latest example):")
            lines.extend(_field_text(field) for field in fields)
    return "\n".join(lines) + "\n"


def _drops(s: RouteSummary) -> list[tuple[str, int]]:
    """(reason, copies) for the reasons with any, the most frequent first."""
    return sorted(((r, n) for r, n in s.drops.items() if n > 0), key=lambda d: (-d[1], d[0]))


def _latency(latency: Latency) -> str:
    return f"p50 {_ms(latency.p50)} p99 {_ms(latency.p99)}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _field_text(field: FieldCount) -> str:
    return f"    {field.count:>8}  {field.kind:<14} {field.path}  e.g. {_example(field.example)}"


def _example(d: Difference) -> str:
    if d.primary is None and d.candidate is None:  # order_only: nothing to show but where
        return d.path
    return f"{d.path}: {_value(d.primary)} -> {_value(d.candidate)}"


def _value(value: str | None) -> str:
    return "(absent)" if value is None else value


def _route_json(s: RouteSummary) -> dict[str, Any]:
    return {
        "route": s.route,
        "mirrored": s.mirrored,
        "compared": s.compared,
        "identical": s.identical,
        "different": s.different,
        "noise_only": s.noise_only,
        "status_only": s.status_only,
        "candidate_errors": s.candidate_errors,
        "dropped": s.dropped,
        "drops": dict(_drops(s)),
        "identical_pct": round(s.identical_pct, 2),
        "differing_pct": round(s.differing_pct, 2),
        "latency_ms": {
            "primary": {"p50": s.primary_ms.p50, "p99": s.primary_ms.p99},
            "candidate": {"p50": s.candidate_ms.p50, "p99": s.candidate_ms.p99},
        },
        "top_differences": [_field_json(field) for field in s.top_differences],
        "top_noisy": [_field_json(field) for field in s.top_noisy],
    }


def _field_json(field: FieldCount) -> dict[str, Any]:
    example = field.example
    return {
        "path": field.path,
        "kind": field.kind,
        "count": field.count,
        "example": {
            "path": example.path,
            "primary": example.primary,
            "candidate": example.candidate,
        },
    }
