"""The shadow report: the numbers in the text and the JSON are the summaries' numbers."""

from __future__ import annotations

import json
from dataclasses import replace

from gateway.shadow.differ import Difference
from gateway.shadow.records import FieldCount, Latency, RouteSummary
from gateway.shadow.report import NO_DATA, format_report, report_json

PRICE = FieldCount(
    "$.results[*].price",
    "value_changed",
    37,
    Difference("$.results[3].price", "value_changed", "9.99", "10.0"),
)
ORDER = FieldCount("$.results", "order_only", 5, Difference("$.results", "order_only", None, None))
MISSING = FieldCount(
    "$.facets", "missing_field", 2, Difference("$.facets", "missing_field", '{"a":1}', None)
)
NOISE = FieldCount(
    "$.took_ms", "value_changed", 410, Difference("$.took_ms", "value_changed", "3", "5")
)

SEARCH = RouteSummary(
    route="search",
    mirrored=1200,
    compared=1130,
    identical=1000,
    different=44,
    noise_only=80,
    status_only=6,
    candidate_errors=50,
    drops={"shadow_behind": 15, "gateway_busy": 5},
    top_differences=(PRICE, ORDER, MISSING),
    top_noisy=(NOISE,),
    primary_ms=Latency(12.34, 80.0),
    candidate_ms=Latency(15.0, 250.55),
)
ORDERS = RouteSummary(
    route="orders",
    mirrored=3,
    compared=0,
    identical=0,
    different=0,
    noise_only=0,
    status_only=0,
    candidate_errors=1,
    drops={"body_too_large": 2, "worker_down": 0},  # a zero is not shown
    top_differences=(),
    top_noisy=(),
    primary_ms=Latency(5.0, 9.0),
    candidate_ms=Latency(None, None),
)


def test_text_report_per_route() -> None:
    text = format_report([SEARCH, ORDERS])
    assert text.splitlines() == [
        "route search",
        "  mirrored              1200",
        "  compared              1130",
        "  identical             1000  (88.5%)",
        "  differing               44  (3.9%)",
        "  noise only              80",
        "  status only              6  (bodies too large to compare)",
        "  candidate errors        50",
        "  dropped                 20",
        "    shadow_behind         15",
        "    gateway_busy           5",
        "  latency ms        primary p50 12.3 p99 80.0, shadow p50 15.0 p99 250.6",
        "  top differing fields (comparisons, kind, field, latest example):",
        "          37  value_changed  $.results[*].price  e.g. $.results[3].price: 9.99 -> 10.0",
        "           5  order_only     $.results  e.g. $.results",
        '           2  missing_field  $.facets  e.g. $.facets: {"a":1} -> (absent)',
        "  noisy fields (comparisons, kind, field, latest example):",
        "         410  value_changed  $.took_ms  e.g. $.took_ms: 3 -> 5",
        "",
        "route orders",
        "  mirrored                 3",
        "  compared                 0",
        "  identical                0  (0.0%)",
        "  differing                0  (0.0%)",
        "  noise only               0",
        "  status only              0  (bodies too large to compare)",
        "  candidate errors         1",
        "  dropped                  2",
        "    body_too_large         2",
        "  latency ms        primary p50 5.0 p99 9.0, shadow p50 - p99 -",
    ]


def test_text_report_without_data() -> None:
    assert format_report([]) == NO_DATA + "\n"


def test_json_report() -> None:
    report = report_json([SEARCH, ORDERS])
    assert json.loads(json.dumps(report)) == report
    search, orders = report["routes"]
    assert search == {
        "route": "search",
        "mirrored": 1200,
        "compared": 1130,
        "identical": 1000,
        "different": 44,
        "noise_only": 80,
        "status_only": 6,
        "candidate_errors": 50,
        "dropped": 20,
        "drops": {"shadow_behind": 15, "gateway_busy": 5},
        "identical_pct": 88.5,
        "differing_pct": 3.89,
        "latency_ms": {
            "primary": {"p50": 12.34, "p99": 80.0},
            "candidate": {"p50": 15.0, "p99": 250.55},
        },
        "top_differences": [
            {
                "path": "$.results[*].price",
                "kind": "value_changed",
                "count": 37,
                "example": {"path": "$.results[3].price", "primary": "9.99", "candidate": "10.0"},
            },
            {
                "path": "$.results",
                "kind": "order_only",
                "count": 5,
                "example": {"path": "$.results", "primary": None, "candidate": None},
            },
            {
                "path": "$.facets",
                "kind": "missing_field",
                "count": 2,
                "example": {"path": "$.facets", "primary": '{"a":1}', "candidate": None},
            },
        ],
        "top_noisy": [
            {
                "path": "$.took_ms",
                "kind": "value_changed",
                "count": 410,
                "example": {"path": "$.took_ms", "primary": "3", "candidate": "5"},
            },
        ],
    }
    assert orders["identical_pct"] == orders["differing_pct"] == 0.0
    assert orders["latency_ms"]["candidate"] == {"p50": None, "p99": None}
    assert orders["top_differences"] == orders["top_noisy"] == []
    assert (orders["dropped"], orders["drops"]) == (2, {"body_too_large": 2})


def test_a_route_without_drops_shows_no_reasons() -> None:
    quiet = replace(SEARCH, drops={})
    assert "  dropped                  0\n  latency ms" in format_report([quiet])
    assert report_json([quiet])["routes"][0]["drops"] == {}


def test_json_report_without_data() -> None:
    assert report_json([]) == {"routes": []}
