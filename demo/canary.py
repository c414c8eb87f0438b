"""The demo's canary checks: the split over many users, stickiness, and who moves.

Each of `USERS` distinct users (a token with its own `sub`) asks the route `rounds` times;
every answer's `X-Strangler-Upstream` says who served it. A user served by two upstreams
is not sticky and fails the step. The share served by the new service must match the
weights within four standard deviations of a binomial draw over that many users (the
split hashes each `sub` to a fixed point, so the figure is the same run after run: the
bound says the hash spreads these users as the weights say). When the weights change, the
users who changed upstream are compared with what `gateway.config.split.moves` computes from the
two layouts (what `strangler routes diff` prints): all of them must go from the monolith
to the new service, none back.
"""

from __future__ import annotations

import math
from collections import Counter

from demo.client import Client, Tokens
from demo.progress import StepFailed, StepLog
from gateway.config.routes import Route
from gateway.config.split import moves

USERS = tuple(f"user-{i:03d}" for i in range(1, 201))
PROBE = "/search?q=lamp&category=lighting&size=1"  # a real search, and a quick one
SIGMAS = 4.0

Assignment = dict[str, str]  # user -> the upstream that answers them


def survey(
    client: Client, tokens: Tokens, rounds: int, users: tuple[str, ...] = USERS
) -> Assignment:
    """Ask as each user `rounds` times (round by round); fail on a user served by two."""
    seen: Assignment = {}
    for _ in range(rounds):
        for user in users:
            answer = client.get(PROBE, tokens.of(user, "buyer"))
            if answer.status != 200 or answer.upstream is None:
                raise StepFailed(f"GET {PROBE} as {user} answered {answer.brief()}")
            first = seen.setdefault(user, answer.upstream)
            if first != answer.upstream:
                raise StepFailed(
                    f"{user} was answered by {first}, then by {answer.upstream}: not sticky"
                )
    return seen


def check_share(
    progress: StepLog, seen: Assignment, monolith: str, new: str, percent: int, rounds: int
) -> None:
    counts = Counter(seen.values())
    users, ours = len(seen), counts[new]
    share = percent / 100
    bound = SIGMAS * math.sqrt(users * share * (1 - share))
    progress.say(
        f"{users} users, each asked {_times(rounds)}: {ours} ({100 * ours / users:.1f}%) "
        f"answered by {new}, {counts[monolith]} by {monolith}; the weights say {percent}% "
        f"(+/- {100 * bound / users:.1f}% for {users} users)"
    )
    if abs(ours - users * share) > bound or ours + counts[monolith] != users:
        raise StepFailed(f"{ours} of {users} users on {new} is not {percent}% of them")
    if rounds > 1:
        progress.say(f"every user got the same upstream on each of their {rounds} requests")


def check_all(progress: StepLog, seen: Assignment, new: str) -> None:
    others = Counter(upstream for upstream in seen.values() if upstream != new)
    if others:
        raise StepFailed(f"users answered by other upstreams than {new}: {dict(others)}")
    progress.say(f"all {len(seen)} users asked were answered by {new}")


def check_moves(
    progress: StepLog,
    before: Assignment,
    after: Assignment,
    old: Route,
    new_route: Route,
    monolith: str,
    new: str,
) -> None:
    moved = Counter((before[user], after[user]) for user in USERS if before[user] != after[user])
    backwards = {pair: n for pair, n in moved.items() if pair != (monolith, new)}
    if backwards:
        raise StepFailed(f"users moved other than {monolith} -> {new}: {dict(backwards)}")
    expected = _expected_share(old, new_route, monolith, new)
    users, count = len(USERS), moved[(monolith, new)]
    bound = SIGMAS * math.sqrt(users * expected * (1 - expected))
    progress.say(
        f"{count} users ({100 * count / users:.1f}%) moved {monolith} -> {new}, as the diff "
        f"said ({100 * expected:.1f}% +/- {100 * bound / users:.1f}%); none moved back; the "
        f"other {users - count} kept their upstream"
    )
    if abs(count - users * expected) > bound:
        raise StepFailed(f"{count} of {users} users moved, not {100 * expected:.1f}% of them")


def check_same(progress: StepLog, seen: Assignment, earlier: Assignment, what: str) -> None:
    changed = [user for user in USERS if seen[user] != earlier[user]]
    if changed:
        raise StepFailed(
            f"{len(changed)} users are not served as {what}, e.g. {changed[0]}: "
            f"{earlier[changed[0]]} then, {seen[changed[0]]} now"
        )
    progress.say(f"every one of the {len(USERS)} users is served as {what}")


def _expected_share(old: Route, new_route: Route, monolith: str, new: str) -> float:
    if old.rollout.split is None or new_route.rollout.split is None:
        raise StepFailed("both layouts must be splits to compare who moves")
    shares = {(a, b): share for a, b, share in moves(old.rollout.split, new_route.rollout.split)}
    return shares.get((monolith, new), 0.0)


def _times(rounds: int) -> str:
    return {1: "once", 2: "twice"}.get(rounds, f"{rounds} times")
