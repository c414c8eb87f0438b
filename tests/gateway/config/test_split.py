"""The weighted split: shares within statistical bounds, stickiness, consistent growth."""

from __future__ import annotations

import math

import pytest

from gateway.config.split import SPACE, Split, assignment_order, moves

USERS = [f"user-{i}".encode() for i in range(20_000)]
# z for a two-sided normal bound that a fair hash breaks with probability ~6e-7 per test;
# the users are fixed, so the outcome is deterministic, and the bound is what makes it
# meaningful: a biased hash (or off-by-one bounds) lands far outside it.
Z = 5.0


def picks(split: Split) -> list[str]:
    return [split.pick(user) for user in USERS]


def binomial_bound(n: int, p: float) -> float:
    return Z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("share", [1, 10, 50, 90])
def test_two_way_shares_are_binomial(share: int) -> None:
    split = Split.of({"legacy": 100 - share, "search": share}, "legacy", b"search")
    seen = picks(split).count("search")
    expected = len(USERS) * share / 100
    assert abs(seen - expected) <= binomial_bound(len(USERS), share / 100), (seen, expected)


def test_three_way_shares_pass_a_chi_square_test() -> None:
    weights = {"legacy": 50, "search": 30, "search-v2": 20}
    chosen = picks(Split.of(weights, "legacy", b"search"))
    statistic = 0.0
    for name, weight in weights.items():
        expected = len(USERS) * weight / 100
        statistic += (chosen.count(name) - expected) ** 2 / expected
    # df = 2: P(chi2 > x) = exp(-x/2), so the 1e-6 critical value is -2 ln(1e-6) = 27.6
    assert statistic < -2 * math.log(1e-6), statistic


def test_a_zero_weight_upstream_gets_nobody() -> None:
    split = Split.of({"legacy": 100, "search": 0, "other": 5}, "legacy", b"r")
    assert "search" not in picks(split)
    assert split.live == ("legacy", "other")


def test_one_user_sees_one_upstream_and_reloads_change_nothing() -> None:
    weights = {"legacy": 70, "search": 30}
    first = picks(Split.of(weights, "legacy", b"search"))
    again = picks(Split.of(dict(reversed(weights.items())), "legacy", b"search"))
    assert first == again  # a rebuilt table, even with the mapping reordered: nobody moves
    assert first == picks(Split.of(weights, "legacy", b"search"))


def test_raising_the_share_moves_only_legacy_users_to_the_new_service() -> None:
    before = picks(Split.of({"legacy": 90, "search": 10}, "legacy", b"search"))
    after = picks(Split.of({"legacy": 70, "search": 30}, "legacy", b"search"))
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert set(moved) == {("legacy", "search")}
    assert abs(len(moved) - 0.2 * len(USERS)) <= binomial_bound(len(USERS), 0.2)
    # lowering it again moves the same users back, and only them
    back = picks(Split.of({"legacy": 90, "search": 10}, "legacy", b"search"))
    assert back == before


def test_routes_draw_their_users_independently() -> None:
    one = picks(Split.of({"legacy": 50, "search": 50}, "legacy", b"search"))
    other = picks(Split.of({"legacy": 50, "search": 50}, "legacy", b"products"))
    both = sum(a == b == "search" for a, b in zip(one, other, strict=True))
    assert abs(both - len(USERS) / 4) <= binomial_bound(len(USERS), 0.25)


def test_moves_are_exact_shares_of_the_two_layouts() -> None:
    old = Split.of({"legacy": 90, "search": 10}, "legacy", b"s")
    assert moves(old, Split.of({"legacy": 50, "search": 50}, "legacy", b"s")) == [
        ("legacy", "search", pytest.approx(0.4))
    ]
    assert moves(old, Split.of({"search": 1}, "legacy", b"s")) == [
        ("legacy", "search", pytest.approx(0.9))
    ]
    assert moves(old, old) == []
    renamed = moves(old, Split.of({"legacy": 90, "search": 10}, "legacy", b"t"))
    assert renamed == [
        ("legacy", "search", pytest.approx(0.09)),
        ("search", "legacy", pytest.approx(0.09)),
    ]


def test_the_monolith_comes_first_then_names() -> None:
    assert assignment_order(["search", "b", "legacy"], "legacy") == ("legacy", "b", "search")
    assert assignment_order(["search", "b"], None) == ("b", "search")
    split = Split.of({"search": 1, "legacy": 3}, "legacy", b"x")
    assert split.weights == (("legacy", 3), ("search", 1))
    assert split.bounds == (3 * SPACE // 4, SPACE)


def test_points_are_64_bit_and_salted_with_the_route() -> None:
    r, s = (Split.of({"legacy": 1, "search": 1}, "legacy", salt) for salt in (b"r", b"s"))
    assert 0 <= r.point(b"alice") < SPACE
    assert r.point(b"alice") == Split.of({"legacy": 9, "search": 1}, "legacy", b"r").point(b"alice")
    assert r.point(b"alice") != s.point(b"alice")
    with pytest.raises(ValueError, match="above 0"):
        Split.of({"legacy": 0, "search": 0}, "legacy", b"r")


def test_a_remembered_pick_is_the_computed_one_and_the_memory_is_bounded() -> None:
    split = Split.of({"legacy": 7, "search": 3}, "legacy", b"route")
    fresh = Split.of({"legacy": 7, "search": 3}, "legacy", b"route")
    users = [b"c:%032x" % n for n in range(5000)]
    first = [split.pick(user) for user in users]
    again = [split.pick(user) for user in users]  # from memory where remembered
    assert first == again == [fresh.pick(user) for user in reversed(users)][::-1]
    assert 0 < len(split.picks) <= 4096
    long_key = b"sub:" + b"x" * 200
    assert split.pick(long_key) == fresh.pick(long_key) and long_key not in split.picks
    share = first.count("search") / len(first)
    assert 0.25 < share < 0.35  # the bounds still cut the space by weight
