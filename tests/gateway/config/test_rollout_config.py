"""Route states, weighted targets and promotion gates in routes.yaml: derived, checked,
and every contradiction reported with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.validation import ConfigError
from gateway.config.table import RouteTable, parse

HEAD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  search: {url: "http://127.0.0.1:8002"}
  other: {url: "http://127.0.0.1:8003"}
default: legacy
auth: {default: none}
authz: none
routes:
"""  # routes start on line 9


def table(routes: str, head: str = HEAD) -> RouteTable:
    return parse((head + routes).encode(), "routes.yaml")


def errors(routes: str, head: str = HEAD) -> list[str]:
    with pytest.raises(ConfigError) as info:
        table(routes, head)
    return [str(issue) for issue in info.value.issues]


def test_states_are_derived_from_the_targets() -> None:
    routes = table(
        "  - {name: a, path: /a, upstream: legacy}\n"
        "  - {name: b, path: /b, upstream: legacy, shadow: {upstream: search}}\n"
        "  - {name: c, path: /c, upstream: {legacy: 90, search: 10}}\n"
        "  - {name: d, path: /d, upstream: search}\n"
        "  - {name: e, path: /e, upstream: {legacy: 100, search: 0}}\n"
        "  - {name: f, path: /f, upstream: {legacy: 0, search: 1}, state: migrated}\n"
        "  - {name: g, path: /g, upstream: search, shadow: {upstream: legacy}}\n"
    ).routes
    assert [r.rollout.state for r in routes] == [
        "legacy",
        "shadow",
        "canary",
        "migrated",
        "legacy",
        "migrated",
        "migrated",
    ]
    canary = routes[2]
    assert canary.upstream == "legacy"  # the largest share
    assert canary.rollout.weights == (("legacy", 90), ("search", 10))
    assert canary.rollout.split is not None and canary.rollout.split.live == ("legacy", "search")
    assert routes[4].rollout.split is None  # one live upstream: no hashing per request
    assert routes[5].upstream == "search"


def test_the_monolith_is_the_default_or_named() -> None:
    head = HEAD.replace("default: legacy\n", "rollout: {monolith: search}\n")
    states = [
        r.rollout.state
        for r in table(
            "  - {name: a, path: /a, upstream: search}\n"
            "  - {name: b, path: /b, upstream: legacy}\n",
            head,
        ).routes
    ]
    assert states == ["legacy", "migrated"]
    nothing = HEAD.replace("default: legacy\n", "")
    assert table("  - {name: a, path: /a, upstream: legacy}\n", nothing).routes[
        0
    ].rollout.state == ("migrated")


def test_weighted_targets_order_and_main_upstream() -> None:
    route = table("  - {name: c, path: /c, upstream: {search: 50, legacy: 50}}\n").routes[0]
    assert route.rollout.weights == (("legacy", 50), ("search", 50))
    assert route.upstream == "legacy"  # a tie goes to the monolith
    described = table("  - {name: c, path: /c, upstream: {search: 3, legacy: 1}}\n").describe()
    assert described["routes"][0]["state"] == "canary"
    assert described["routes"][0]["weights"] == {"legacy": 1, "search": 3}


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            "  - {name: c, path: /c, upstream: {legacy: 90, nope: 10}}\n",
            ["line 9: route 'c': unknown upstream 'nope'"],
        ),
        (
            "  - name: c\n    path: /c\n    upstream:\n      legacy: 90\n      search: -1\n",
            ["line 13: route 'c': upstream: weight of 'search': '-1' must be a whole number"],
        ),
        (
            "  - {name: c, path: /c, upstream: {legacy: 9.5, search: 1}}\n",
            ["line 9: route 'c': upstream: weight of 'legacy': '9.5' must be a whole number"],
        ),
        (
            "  - {name: c, path: /c, upstream: {legacy: 0, search: 0}}\n",
            ["line 9: route 'c': upstream: at least one weight must be above 0"],
        ),
        ("  - {name: c, path: /c, upstream: {}}\n", ["line 9: route 'c': upstream: name one"]),
        (
            "  - {name: c, path: /c, upstream: [legacy, search]}\n",
            ["line 9: route 'c': upstream must be a mapping"],
        ),
        (
            "  - {name: c, path: /c, upstream: {legacy: 1, legacy: 2}}\n",
            ["line 9: route 'c': upstream: duplicate key 'legacy'"],
        ),
        (
            "  - {name: c, path: /c, upstream: legacy, state: canary}\n",
            ["line 9: route 'c': state: canary, but its targets make it legacy (only the monolith"],
        ),
        (
            "  - {name: c, path: /c, upstream: {legacy: 90, search: 10}, state: shadow}\n",
            ["line 9: route 'c': state: shadow, but its targets make it canary (2 upstreams"],
        ),
        (
            "  - {name: c, path: /c, upstream: search, state: legacy}\n",
            ["state: legacy, but its targets make it migrated (only 'search', not the monolith"],
        ),
        (
            "  - {name: c, path: /c, upstream: legacy, state: done}\n",
            ["line 9: route 'c': state must be one of legacy, shadow, canary, migrated"],
        ),
        (
            "  - {name: c, path: /c, upstream: search, shadow: {upstream: search}}\n",
            ["line 9: route 'c': shadow: 'search' is the route's own upstream"],
        ),
    ],
)
def test_target_and_state_errors_have_their_lines(routes: str, expected: list[str]) -> None:
    found = errors(routes)
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert want in got, (got, want)


@pytest.mark.parametrize(
    ("promote", "expected"),
    [
        ("{min_match: 99.5}", "min_match: '99.5': write a percentage such as 99.5%"),
        ("{min_match: 101%}", "min_match: '101%' must be between 0% and 100%"),
        ("{min_samples: 0}", "min_samples: '0' must be a positive integer"),
        ("{max_p99_ratio: 0}", "max_p99_ratio: '0' must be above 0"),
        ("{auto: yes please}", "auto must be one of true, false"),
        ("{steps: [50, 10]}", "steps must increase"),
        ("{steps: [10, 100]}", "'100': a canary share is a whole percentage from 1 to 99"),
        ("{steps: []}", "steps: give at least one share"),
        ("{min_sample: 3}", "unknown key 'min_sample'"),
    ],
)
def test_promotion_gate_errors_have_their_lines(promote: str, expected: str) -> None:
    found = errors(f"  - name: c\n    path: /c\n    upstream: legacy\n    promote: {promote}\n")
    assert len(found) == 1 and found[0].startswith("line 12: route 'c': promote"), found
    assert expected in found[0]


def test_a_gate_needs_the_monolith_and_one_new_upstream() -> None:
    nothing = HEAD.replace("default: legacy\n", "")
    assert (
        "promote needs the monolith"
        in errors("  - {name: c, path: /c, upstream: legacy, promote: {}}\n", nothing)[0]
    )
    found = errors(
        "  - {name: c, path: /c, upstream: {legacy: 8, search: 1, other: 1}, promote: {}}\n"
    )
    assert "one new upstream; this one names other, search" in found[0]


def test_a_valid_gate() -> None:
    route = table(
        "  - name: c\n    path: /c\n    upstream: legacy\n    shadow: {upstream: search}\n"
        "    promote: {min_samples: 50, min_match: 99.9%, max_p99_ratio: 1.5, auto: true,"
        " steps: [5%, 25, 50]}\n"
    ).routes[0]
    gate = route.rollout.promote
    assert gate is not None
    assert (gate.min_samples, gate.min_match, gate.max_p99_ratio) == (50, 99.9, 1.5)
    assert gate.auto and gate.steps == (5, 25, 50)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{monolith: nope}", "line 8: rollout: monolith: unknown upstream 'nope'"),
        ("{cookie: 'a b'}", "line 8: rollout: cookie: 'a b' is not a cookie name"),
        ("{cookie_max_age: 0s}", "cookie_max_age: '0s' must be at least 1s"),
        ("{secret_env: STRANGLER_TEST_UNSET}", "$STRANGLER_TEST_UNSET must hold a secret"),
        ("{colour: red}", "rollout: unknown key 'colour'"),
    ],
)
def test_rollout_section_errors(section: str, expected: str) -> None:
    head = HEAD.replace("routes:\n", f"rollout: {section}\nroutes:\n")
    found = errors("  - {name: a, path: /a, upstream: legacy}\n", head)
    assert len(found) == 1 and expected in found[0], found


def test_the_rollout_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRANGLER_TEST_STICKY", "s" * 32)
    head = HEAD.replace(
        "routes:\n",
        "rollout: {cookie: canary_id, cookie_max_age: 7d, secret_env: STRANGLER_TEST_STICKY,"
        " interval: 2s}\nroutes:\n",
    )
    rollout = table("  - {name: a, path: /a, upstream: legacy}\n", head).rollout
    assert rollout.monolith == "legacy" and rollout.interval == 2.0
    assert rollout.sticky.cookie == "canary_id" and rollout.sticky.max_age == 7 * 86400
    assert rollout.sticky.secret == b"s" * 32
    assert "s" * 32 not in repr(rollout)  # the secret stays out of logs
    default = table("  - {name: a, path: /a, upstream: legacy}\n").rollout
    assert len(default.sticky.secret) == 32
    assert (
        default.sticky.secret
        == table("  - {name: b, path: /b, upstream: legacy}\n").rollout.sticky.secret
    )


def test_routes_check_prints_every_routes_state(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        HEAD + "  - {name: a, path: /a, upstream: legacy}\n"
        "  - {name: b, path: /b, upstream: legacy, shadow: {upstream: search}}\n"
        "  - {name: c, path: /c, upstream: {legacy: 90, search: 10}, promote: {min_samples: 5}}\n"
        "  - {name: d, path: /d, upstream: search}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "routes", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    states = {
        line.split()[1]: line.split()[0]
        for line in done.stdout.splitlines()
        if line.split() and line.split()[0] in ("legacy", "shadow", "canary", "migrated")
    }
    assert states == {"a": "legacy", "b": "shadow", "c": "canary", "d": "migrated"}
    assert "legacy 90% / search 10%" in done.stdout
    assert "5 samples, 99.5% match, p99 x1.2, canary steps 10%" in done.stdout
    assert "http://127.0.0.1:8001/c, http://127.0.0.1:8002/c" in done.stdout
