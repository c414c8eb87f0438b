"""`strangler routes diff OLD NEW`: what an edit moves, before it is saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.config.table import RouteTable, parse
from gateway.rollout.diff import diff

HEAD = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  search: {url: "http://127.0.0.1:8002"}
default: legacy
auth: {default: none}
authz: none
routes:
"""


def table(routes: str, head: str = HEAD) -> RouteTable:
    return parse((head + routes).encode(), "routes.yaml")


SHADOW = "  - {name: search, path: /search, upstream: legacy, shadow: {upstream: search}}\n"
CANARY = "  - {name: search, path: /search, upstream: {legacy: 90, search: 10}}\n"


def test_identical_tables_have_no_changes() -> None:
    assert diff(table(SHADOW), table(SHADOW + "# a comment\n")) == ["no changes"]


def test_a_canary_step_names_the_state_and_the_users_that_move() -> None:
    assert diff(table(SHADOW), table(CANARY)) == [
        "route search (/search): state shadow -> canary",
        "route search (/search): upstream legacy -> legacy 90% / search 10%:"
        " 10.0% of users move legacy -> search",
        "route search (/search): shadow search -> none",
    ]
    wider = CANARY.replace("90, search: 10", "50, search: 50")
    assert diff(table(CANARY), table(wider)) == [
        "route search (/search): upstream legacy 90% / search 10% -> legacy 50% / search 50%:"
        " 40.0% of users move legacy -> search"
    ]
    back = diff(table(wider), table(CANARY))
    assert back[0].endswith("40.0% of users move search -> legacy")


def test_migrating_and_rolling_back() -> None:
    migrated = "  - {name: search, path: /search, upstream: search}\n"
    assert diff(table(CANARY), table(migrated)) == [
        "route search (/search): state canary -> migrated",
        "route search (/search): upstream legacy 90% / search 10% -> search:"
        " 90.0% of users move legacy -> search",
    ]
    assert diff(table(migrated), table("  - {name: search, path: /search, upstream: legacy}\n"))[
        1
    ].endswith("100.0% of users move search -> legacy")


def test_added_and_removed_routes_say_where_their_paths_go() -> None:
    old = table(CANARY)
    new = table(CANARY + "  - {name: orders, path: /orders, upstream: search}\n")
    assert diff(old, new) == [
        "route orders (/orders): added, migrated, search; its paths were served by the default"
        " (legacy)"
    ]
    assert diff(new, old) == [
        "route orders (/orders): removed (was migrated, search); its paths go to the default"
        " (legacy)"
    ]
    nested = table(CANARY + "  - {name: deep, path: /search/deep, upstream: legacy}\n")
    assert diff(nested, old)[0].endswith("its paths go to route search (legacy 90% / search 10%)")


def test_table_level_changes() -> None:
    other = HEAD.replace("8002", "9002").replace("default: legacy\n", "")
    assert diff(table(SHADOW), table(SHADOW, other)) == [
        "upstream search: url http://127.0.0.1:8002 -> http://127.0.0.1:9002",
        "default: legacy -> none (404): unmatched paths move",
        "monolith: legacy -> None",
    ]
    methods = SHADOW.replace("path: /search,", "path: /search, methods: [GET], rewrite: /v2,")
    assert diff(table(SHADOW), table(methods)) == [
        "route search (/search): methods * -> GET,HEAD",
        "route search (/search): rewrite changed",
    ]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "routes", "diff", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_command_prints_the_diff_or_every_error_with_its_line(tmp_path: Path) -> None:
    old, new, bad = tmp_path / "old.yaml", tmp_path / "new.yaml", tmp_path / "bad.yaml"
    old.write_text(HEAD + SHADOW)
    new.write_text(HEAD + CANARY)
    done = run(str(old), str(new))
    assert done.returncode == 0, done.stderr
    assert "10.0% of users move legacy -> search" in done.stdout
    bad.write_text(HEAD + "  - {name: search, path: /search, upstream: {legacy: -1}}\n")
    failed = run(str(old), str(bad))
    assert failed.returncode == 1 and failed.stdout == ""
    assert f"{bad}:8: route 'search': upstream: weight of 'legacy'" in failed.stderr
    both = run(str(bad), str(tmp_path / "absent.yaml"))
    assert both.returncode == 1
    assert f"{bad}:8:" in both.stderr and "absent.yaml: 1 error(s)" in both.stderr
