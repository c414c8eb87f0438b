"""The demo's shadow steps: play searches, read the match rate, and a deliberate difference.

The comparisons run in the gateway's shadow worker, off the request path; the demo reads
them through the admin API (`GET /_strangler/shadow?route=search&since=...`, what `strangler
shadow report` prints) once every played search has been compared. The deliberate
difference is the search service's `rounded_prices` dev toggle (`strangler search serve
--dev-toggles`, new_services/search/toggles.py), switched on the service itself: a stack
whose search service does not offer it has those sub-steps skipped, with the reason.
"""

from __future__ import annotations

import math
import time
from typing import Any

from demo.client import Client, NoAnswer, Tokens
from demo.progress import StepFailed, StepLog

# Searches whose answers carry prices.
TRAFFIC = tuple(
    f"/search?q={q}&size=10&page={page}" for q in ("a", "e", "o", "lamp") for page in (1, 2)
)
TOGGLE = "/_dev/toggles/rounded_prices"
REPORT_SECONDS = 20.0


class Shadow:
    def __init__(
        self, gateway: Client, search: Client | None, tokens: Tokens, progress: StepLog
    ) -> None:
        self.gateway = gateway
        self.search = search
        self.tokens = tokens
        self.progress = progress

    def play(self, upstream: str) -> float:
        """Send every search of TRAFFIC; each must be answered by `upstream`. Returns when
        the first was sent, for the report's window."""
        since = time.time()
        for path in TRAFFIC:
            answer = self.gateway.get(path)
            if answer.status != 200 or answer.upstream != upstream:
                raise StepFailed(f"{path}: {answer.brief()}, not {upstream}")
        return since

    def toggles_missing(self) -> str | None:
        """Why the deliberate difference cannot be shown, or None when it can."""
        if self.search is None:
            return (
                "no --search-url: the demo reaches the search service's dev toggles only "
                "directly (compose: add -f deploy/compose.demo.yaml, then --search-url "
                "http://localhost:8002)"
            )
        try:
            answer = self.search.get("/_dev/toggles")
        except NoAnswer as exc:
            return str(exc)
        if answer.status != 200:
            return (
                f"{self.search.base_url}/_dev/toggles answered {answer.status}: start the "
                "search service with `strangler search serve --dev-toggles`"
            )
        return None

    def toggle(self, value: str) -> None:
        assert self.search is not None  # toggles_missing() said the toggles are there
        answer = self.search.send("PUT", TOGGLE, value)
        if answer.status != 200:
            raise StepFailed(f"PUT {TOGGLE} answered {answer.brief()}")
        self.progress.say(f"PUT {self.search.base_url}{TOGGLE} {value} -> {answer.body.decode()}")

    def summary(self, since: float) -> dict[str, Any]:
        """The report on the comparisons since `since`, once all of TRAFFIC is compared."""
        deadline = time.monotonic() + REPORT_SECONDS
        while True:
            window = math.ceil((time.time() - since) * 1000)
            path = f"/_strangler/shadow?route=search&since={window}ms"
            answer = self.gateway.get(path, self.tokens.admin())
            if answer.status != 200:
                raise StepFailed(f"the shadow report answered {answer.brief()}")
            routes = answer.json()["routes"]
            summary: dict[str, Any] = routes[0] if routes else {"mirrored": 0}
            if summary["mirrored"] >= len(TRAFFIC):
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{len(TRAFFIC)} comparisons expected, the report says {routes}")
            time.sleep(0.1)  # the comparisons run in the shadow worker; we poll the report
        self.progress.say(
            f"GET /_strangler/shadow: mirrored {summary['mirrored']}, compared "
            f"{summary['compared']}: {summary['identical']} identical "
            f"({summary['identical_pct']:.1f}%), {summary['different']} differing "
            f"({summary['differing_pct']:.1f}%)"
        )
        for top in summary["top_differences"][:3]:
            example = top["example"]
            self.progress.say(
                f"differing field {top['path']} ({top['kind']}) in {top['count']} "
                f"comparisons, e.g. {example['path']}: {example['primary']} -> "
                f"{example['candidate']}"
            )
        return summary

    def expect_all_identical(self, since: float) -> None:
        summary = self.summary(since)
        if summary["identical"] != len(TRAFFIC) or summary["top_differences"]:
            raise StepFailed(f"expected every answer to match, the report says {summary}")

    def expect_price_difference(self, since: float) -> None:
        summary = self.summary(since)
        fields = [top["path"] for top in summary["top_differences"]]
        if summary["different"] == 0 or fields[:1] != ["$.results[*].price"]:
            raise StepFailed(f"expected $.results[*].price to differ, the report says {summary}")
