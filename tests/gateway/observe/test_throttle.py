"""Throttled warnings: one line per interval and key, the next one counting what was left out."""

from __future__ import annotations

import logging

import pytest

from gateway.observe.throttle import Throttled


def test_a_flood_is_one_line_a_second_per_key(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    throttled = Throttled(logging.getLogger("strangler.test"), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="strangler.test"):
        for _ in range(3):
            throttled.warning("a", "upstream %s failed", "a")
        throttled.warning("b", "upstream %s failed", "b")
        now[0] += 1.0
        throttled.warning("a", "upstream %s failed", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "upstream a failed",
        "upstream b failed",
        "upstream a failed (2 more like it since the last line)",
    ]
