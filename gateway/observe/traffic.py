"""What the gateway answered: requests by route, upstream and status, latency, authz decisions.

Counted on the request path into plain dicts and ints (one dict lookup and a few additions a
request; `python -m bench proxy` measures it); turned into Prometheus metrics or the
dashboard's numbers only when someone reads them. Labels are the access log's `route` and
`upstream` fields: a route's name, never the raw path, so the number of series is bounded by
routes.yaml.
"""

from __future__ import annotations

from gateway.base.histogram import Histogram

GATEWAY = "(gateway)"  # answered by the gateway: admin, /metrics, errors before an upstream
AUTHZ_OUTCOMES = ("allow", "deny", "error")  # Series.decisions, in this order
ALLOW, DENY, ERROR = range(3)


class Series:
    """One (route, upstream) pair: answers by status code, their latency, policy decisions."""

    __slots__ = ("decisions", "latency", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latency = Histogram()
        self.decisions = [0, 0, 0]  # by AUTHZ_OUTCOMES

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def between(self, low: int, high: int) -> int:
        """Answers with low <= status < high (400, 500: the client errors)."""
        return sum(n for status, n in self.statuses.items() if low <= status < high)


class Traffic:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str], Series] = {}

    def count(
        self, route: str, upstream: str, status: int, seconds: float, decision: int | None
    ) -> None:
        """One answer; `decision`: ALLOW, DENY or ERROR when the policy was asked."""
        key = (route, upstream)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        statuses = series.statuses
        statuses[status] = statuses.get(status, 0) + 1
        series.latency.observe(seconds)
        if decision is not None:
            series.decisions[decision] += 1

    def decisions(self) -> dict[tuple[str, str], int]:
        """(route, outcome) -> count, summed over upstreams."""
        result: dict[tuple[str, str], int] = {}
        for (route, _), series in list(self.series.items()):
            for outcome, n in zip(AUTHZ_OUTCOMES, series.decisions, strict=True):
                if n:
                    result[(route, outcome)] = result.get((route, outcome), 0) + n
        return result
