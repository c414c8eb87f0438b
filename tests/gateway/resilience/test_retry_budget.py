"""The retry budget, its sliding window and the backoff: pure, time and draws passed in."""

from __future__ import annotations

import pytest

from gateway.config.resilience import RetrySettings
from gateway.resilience.retry_budget import RetryBudget, backoff
from gateway.resilience.window import SlidingCounts


def test_window_counts_and_forgets_a_bucket_at_a_time() -> None:
    window = SlidingCounts(span=10.0, buckets=10)
    window.advance(100.0)
    window.add()
    window.advance(100.5)  # the same bucket
    window.add(marked=True)
    window.advance(105.0)
    window.add(marked=True)
    assert (window.total, window.marked) == (3, 2)
    window.advance(110.9)  # the bucket of 100.x has just fallen out
    assert (window.total, window.marked) == (1, 1)
    window.advance(109.0)  # time never goes back: nothing moves
    assert (window.total, window.marked) == (1, 1)
    window.advance(500.0)
    assert (window.total, window.marked) == (0, 0)
    window.add()
    assert window.total == 1


def test_budget_allows_retries_up_to_its_share_of_requests() -> None:
    budget = RetryBudget(RetrySettings(budget=0.2, min_per_second=0))
    # the owner's running total of requests: 10 so far
    assert [budget.withdraw(0.0, 10) for _ in range(3)] == [True, True, False]
    assert (budget.stats.retried, budget.stats.denied) == (2, 1)


def test_budget_has_a_small_allowance_for_quiet_upstreams() -> None:
    budget = RetryBudget(RetrySettings(budget=0.2, min_per_second=0.3), window=10.0)
    # one request: 20% of it is no whole retry, but 0.3/s over 10 s allows 3
    assert [budget.withdraw(0.0, 1) for _ in range(4)] == [True, True, True, False]


def test_budget_refills_as_the_window_moves_on() -> None:
    budget = RetryBudget(RetrySettings(budget=0.5, min_per_second=0), window=10.0)
    assert budget.withdraw(0.0, 2) and not budget.withdraw(0.0, 2)
    budget.advance(15.0, 2)  # the owner's timer: the two requests and the retry expire
    assert not budget.withdraw(15.0, 2)  # no request in the window: no retry
    budget.advance(20.0, 4)  # two more requests folded in
    assert budget.withdraw(20.0, 4)
    assert not budget.withdraw(20.0, 4)


@pytest.mark.parametrize(
    ("retry", "uniform", "expected"),
    [(1, 0.5, 0.05), (2, 0.5, 0.1), (3, 1.0, 0.4), (10, 1.0, 1.0), (4, 0.0, 0.0)],
)
def test_backoff_is_exponential_with_full_jitter_up_to_the_cap(
    retry: int, uniform: float, expected: float
) -> None:
    settings = RetrySettings(backoff=0.1, max_backoff=1.0)
    assert backoff(settings, retry, uniform) == pytest.approx(expected)
