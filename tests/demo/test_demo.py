"""`strangler demo --check` tells the whole story and verifies every step, on a stack of its
own or `--against` one that runs already."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cli
from cli.routes.step import step_file
from demo import compose_env
from demo.canary import USERS
from demo.progress import StepLog
from demo.stack import LocalStack
from gateway.config import table as config
from gateway.config.split import Split
from gateway.rollout.editor import set_weights

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEMO_OVERRIDE = ROOT / "deploy" / "compose.demo.yaml"
KEY_VARIABLE = "STRANGLER_DEV_HS256_SECRET"


def demo_check(
    *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--check", *options],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
    )


def on_new_service(percent: int) -> int:
    """How many of the demo's users the split sends to search at `percent`, computed here
    from the hash (gateway/config/split.py), not read from the gateway."""
    split = Split.of({"legacy": 100 - percent, "search": percent}, "legacy", b"search")
    return sum(split.pick(b"sub:" + user.encode()) == "search" for user in USERS)


def section(out: str, start: str, end: str) -> str:
    return out[out.index(start) : out.index(end)]


def assert_canary_story(out: str) -> None:
    at10, at50 = on_new_service(10), on_new_service(50)
    canary = section(out, "[3] Canary", "[4] ")
    assert f"each asked twice: {at10} ({at10 / 2:.1f}%) answered by search" in canary
    assert f"each asked twice: {at50} ({at50 / 2:.1f}%) answered by search" in canary
    assert canary.count("every user got the same upstream on each of their 2 requests") == 2
    assert "40.0% of users move legacy -> search" in canary  # routes diff, before the edit
    assert f"{at50 - at10} users ({(at50 - at10) / 2:.1f}%) moved legacy -> search" in canary
    assert "none moved back" in canary
    migrated = section(out, "[5] ", "[6] ")
    assert "canary -> migrated" in migrated
    assert "the same bytes from search as from legacy" in migrated
    assert "all 50 users asked were answered by search" in migrated
    back = section(out, "[6] ", "[6.1] ")
    assert "migrated -> canary (legacy 90% / search 10%)" in back
    assert f"each asked once: {at10} ({at10 / 2:.1f}%) answered by search" in back
    assert "every one of the 200 users is served as at 10% in step 3" in back
    assert "canary -> migrated" in out[out.index("[6.1] ") :]


def assert_cdc_story(out: str) -> None:
    written = section(out, "[4] ", "[5] ")
    assert "POST /products -> 201 from legacy" in written
    # the writer is one the canary sends to search, yet reads the write at once: pinned
    assert re.search(r"GET /search\?q=Demo\w+ at once -> legacy, with the new product", written)
    assert "read-your-writes holds: legacy answered, with it" in written
    assert "the new service's /search finds it" in written
    assert "the rename is in the new service's /search after" in written


def test_demo_check_verifies_every_step(tmp_path: Path) -> None:
    result = demo_check("--workdir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "search documents from a snapshot (op r)" in out  # CDC filled it, not a backfill
    assert "dashboard: http://127.0.0.1:" in out and "/_strangler/" in out
    assert f"strangler token --routes {tmp_path / 'routes.yaml'} --sub you --roles admin" in out
    first = section(out, "[1] ", "[2] ")
    assert first.count("X-Strangler-Upstream: legacy") == 2
    # the shadow steps: all match, then the rounded prices differ, then all match again
    shadowed = section(out, "[2] ", "[3] ")
    assert "legacy -> shadow (shadow to search)" in shadowed
    reports = [line for line in shadowed.splitlines() if "GET /_strangler/shadow" in line]
    assert len(reports) == 3
    assert "8 identical (100.0%), 0 differing" in reports[0]
    assert "0 identical (0.0%), 8 differing (100.0%)" in reports[1]
    assert "8 identical (100.0%), 0 differing" in reports[2]
    assert "differing field $.results[*].price (value_changed) in 8 comparisons" in shadowed
    assert_canary_story(out)
    assert_cdc_story(out)
    assert out.rstrip().endswith("All steps verified.")
    search = config.load(tmp_path / "routes.yaml").match("/search", "GET")
    assert search is not None and search.rollout.state == "migrated"  # the edits were made


def test_demo_check_fails_naming_the_shadow_step_when_the_store_is_broken(
    tmp_path: Path,
) -> None:
    (tmp_path / "shadow.db").mkdir()  # not a database: no comparison can be stored or read
    result = demo_check("--workdir", str(tmp_path))
    assert result.returncode == 1
    assert "FAILED at step 2.1 (Play 8 searches: the shadow report shows the match rate)" in (
        result.stderr
    )
    assert "[3] " not in result.stdout  # the first failure ends the story


def test_demo_check_fails_with_the_step_when_the_cdc_bridge_cannot_start(tmp_path: Path) -> None:
    broken = tmp_path / "mapping.yaml"
    broken.write_text("topic_prefix: legacy\n")  # no tables: the bridge refuses to start
    result = demo_check("--workdir", str(tmp_path), env={**os.environ, "CDC_MAPPING": str(broken)})
    assert result.returncode == 1
    assert "FAILED at step 0.2 (Set up the search service's own database" in result.stderr
    assert "the cdc process exited (1)" in result.stderr
    assert "missing 'tables'" in result.stderr  # the bridge's log, shown by --check


def compose_default(name: str) -> str:
    """The default docker-compose.yml gives `name` in the gateway's environment."""
    value = str(yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]["environment"][name])
    match = re.fullmatch(r"\$\{" + name + r":-([^}]+)\}", value)
    assert match, value
    return match.group(1)


def test_demo_against_a_running_stack(tmp_path: Path) -> None:
    """The same story against a stack the demo did not start: its gateway reads a routes
    file whose key is an environment variable, set as docker-compose.yml sets it."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")  # found above the routes file
    stack = LocalStack(
        tmp_path / "stack", secret_env=KEY_VARIABLE, secret=compose_default(KEY_VARIABLE)
    )
    env = {k: v for k, v in os.environ.items() if k != KEY_VARIABLE}
    try:
        target = stack.start(StepLog(io.StringIO()))
        against = ("--against", target.gateway, "--routes", str(target.routes))

        wrong = demo_check(*against, env={**env, KEY_VARIABLE: "another-key-" + "x" * 32})
        assert wrong.returncode == 1
        assert "FAILED at step 0 (Connect to the gateway" in wrong.stderr
        assert "the gateway refused a token signed with the dev key" in wrong.stderr

        # An earlier run left the route elsewhere: step 1 puts it back on the monolith.
        text = target.routes.read_text()
        text = text.replace(
            "upstream: legacy\n    auth: optional       # a public read",
            (
                "upstream: {legacy: 50, search: 50}\n    shadow: {upstream: search}\n"
                "    auth: optional       # a public read"
            ),
        )
        target.routes.write_text(text)
        assert "search: 50" in text
        result = demo_check(*against, env=env)
    finally:
        stack.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{KEY_VARIABLE}: from {tmp_path / 'docker-compose.yml'}" in out
    assert "docker compose exec -T gateway strangler token --sub you --roles admin" in out
    reset = section(out, "[1] ", "[2] ")
    assert "upstream: legacy, no shadow (an earlier run left it canary)" in reset
    assert "state canary -> legacy" in reset  # what strangler routes diff says of the edit
    toggles = section(out, "[2.2] ", "[3] ")
    assert toggles.count("skipped:") == 2 and "no --search-url" in toggles
    assert_canary_story(out)
    assert_cdc_story(out)
    assert out.rstrip().endswith("All steps verified.")


def test_demo_options_belong_to_one_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--against", "http://localhost:8080", "--workdir", "/tmp/x"]) == 2
    assert "--workdir: for the demo's own stack, not with --against" in capsys.readouterr().err
    assert cli.main(["demo", "--search-url", "http://localhost:8002"]) == 2
    assert "--search-url: only with --against URL" in capsys.readouterr().err


def test_the_demo_override_gives_compose_search_its_toggles() -> None:
    base = yaml.safe_load(COMPOSE.read_text())["services"]["search"]
    override = yaml.safe_load(DEMO_OVERRIDE.read_text())["services"]["search"]
    command = " ".join(override["command"])
    assert command == " ".join(base["command"]) + " --dev-toggles"
    assert override["ports"] == ["127.0.0.1:8002:8002"]  # the port the command listens on
    # docker-compose config accepts the two files: tests/test_compose.py


def test_the_demo_moves_the_compose_routes_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every move of the story validates in the compose stack's own routes file, and its
    comments stay (what --against edits in deploy/)."""
    monkeypatch.chdir(tmp_path)  # the file names no shadow_store: its default is var/ here
    monkeypatch.delenv("STRANGLER_ENV", raising=False)
    routes = tmp_path / "routes.compose.yaml"
    shutil.copy(ROOT / "deploy" / "routes.compose.yaml", routes)
    environ: dict[str, str] = {}  # what compose gives the gateway: the key, the search DB
    assert KEY_VARIABLE in compose_env.fill(routes, COMPOSE, environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    comments = [line for line in routes.read_text().splitlines() if line.lstrip().startswith("#")]

    def state() -> tuple[str, dict[str, int]]:
        route = config.load(routes).match("/search", "GET")
        assert route is not None
        return route.rollout.state, dict(route.rollout.weights)

    def move(backwards: bool = False, to: str | None = None) -> tuple[str, dict[str, int]]:
        outcome = asyncio.run(step_file(routes, "search", backwards=backwards, to=to))
        assert outcome.written
        return state()

    assert move(to="search") == ("shadow", {})
    assert move() == ("canary", {"legacy": 90, "search": 10})
    routes.write_text(set_weights(routes.read_text(), "search", {"legacy": 50, "search": 50}))
    assert state() == ("canary", {"legacy": 50, "search": 50})
    assert move() == ("migrated", {})
    assert move(backwards=True) == ("canary", {"legacy": 90, "search": 10})
    assert move() == ("migrated", {})
    kept = [line for line in routes.read_text().splitlines() if line.lstrip().startswith("#")]
    assert kept == comments


def test_the_repository_routes_file_is_valid() -> None:
    table = config.load(ROOT / "routes.yaml")
    assert set(table.upstreams) == {"legacy", "search"}
    assert table.default == "legacy"


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    first, second = (ROOT / "README.md").read_text().splitlines()[:2]
    assert first.strip().endswith("strangler demo")
    assert second.strip().endswith("python -m pytest") and "[test]" in second
    assert "sed -n '2s/^    //p' README.md" in (ROOT / ".ci" / "run").read_text()
