"""The `metrics:` and `cdc:` sections of routes.yaml: defaults, and every error with its line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.validation import ConfigError
from gateway.config.cdc import CdcSettings
from gateway.config.table import parse
from gateway.observe.cdc import read_status

pytestmark = pytest.mark.anyio

BASE = """\
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
auth: {default: none}
authz: none
routes:
  - {name: search, path: /search, upstream: legacy}
"""
TOKEN = "t" * 32


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text.encode(), "routes.yaml")
    return [str(i) for i in info.value.issues]


def test_defaults_serve_metrics_to_the_policy_and_read_no_cdc_status() -> None:
    table = parse(BASE.encode(), "/srv/routes.yaml")
    assert (table.metrics.path, table.metrics.access) == ("/metrics", "policy")
    assert table.cdc is None


def test_metrics_and_cdc_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRAPE", TOKEN)
    text = (
        BASE
        + "metrics: {access: token, token_env: SCRAPE, path: /ops/metrics}\n"
        + "cdc: {status_file: var/cdc.json, stale_after: 5s}\n"
    )
    table = parse(text.encode(), "/srv/routes.yaml")
    assert table.metrics.path == "/ops/metrics" and table.metrics.token == TOKEN.encode()
    assert TOKEN not in repr(table.metrics)
    assert table.cdc == CdcSettings(Path("/srv/var/cdc.json"), 5.0)  # relative to routes.yaml
    off = parse((BASE + "metrics: {access: off}\n").encode(), "routes.yaml")
    assert off.metrics.path is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "metrics: {access: maybe}",
            "line 7: metrics: access must be one of policy, token, open, off (got 'maybe')",
        ),
        (
            "metrics: {access: token}",
            "line 7: metrics: access: token needs token_env (an environment variable)",
        ),
        (
            "metrics: {access: token, token_env: NOT_SET_ANYWHERE}",
            "line 7: metrics: environment variable 'NOT_SET_ANYWHERE' is not set",
        ),
        (
            "metrics: {access: token, token_env: SHORT}",
            "line 7: metrics: the token in 'SHORT' needs at least 32 characters",
        ),
        (
            "metrics: {access: open, token_env: SCRAPE}",
            "line 7: metrics: token_env is used only with access: token",
        ),
        ("metrics: {path: metrics}", "line 7: metrics: path: 'metrics' must start with '/'"),
        (
            "metrics: {path: /a//metrics}",
            "line 7: metrics: path: '/a//metrics' is not in normal form (write '/a/metrics')",
        ),
        (
            "metrics: {path: /_strangler/metrics}",
            "line 7: metrics: path: '/_strangler/metrics' is inside the admin API /_strangler/",
        ),
        (
            "metrics: {paths: /x}",
            "line 7: metrics: unknown key 'paths' (expected one of: access, path, token_env)",
        ),
        (
            "metrics: {path: /search}",
            "line 6: route 'search': path '/search' is the gateway's metrics endpoint; give metrics a different path, or say metrics: {access: off}",
        ),
        ("metrics: [open]", "line 7: metrics must be a mapping"),
        (
            "cdc: {stale_after: 5s}",
            "line 7: cdc: missing 'status_file' (the bridge's --status-file)",
        ),
        (
            "cdc: {status_file: s.json, stale_after: soon}",
            "line 7: cdc: stale_after: bad duration 'soon' (use e.g. 250ms, 5s, 1m)",
        ),
        (
            "cdc: {status_file: s.json, lag: 1}",
            "line 7: cdc: unknown key 'lag' (expected one of: stale_after, status_file)",
        ),
        ("cdc: var/cdc.json", "line 7: cdc must be a mapping"),
    ],
)
def test_each_error_with_its_line(
    section: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRAPE", TOKEN)
    monkeypatch.setenv("SHORT", "too-short")
    assert errors_of(BASE + section + "\n") == [expected]


def test_a_route_on_the_default_metrics_path_is_an_error_without_a_section() -> None:
    text = BASE + "  - {name: monolith-metrics, path: /metrics, upstream: legacy}\n"
    assert errors_of(text) == [
        "line 7: route 'monolith-metrics': path '/metrics' is the gateway's metrics endpoint;"
        " give metrics a different path, or say metrics: {access: off}"
    ]


async def test_the_status_reader_fails_soft(tmp_path: Path) -> None:
    settings = CdcSettings(tmp_path / "status.json", stale_after=10)
    missing = await read_status(settings)
    assert missing.configured and not missing.up
    assert missing.detail is not None and "No such file" in missing.detail

    settings.status_file.write_text("{not json")
    garbage = await read_status(settings)
    assert garbage.detail is not None and garbage.detail.startswith("unreadable CDC status")

    settings.status_file.write_text(json.dumps({"state": "running", "topics": {}}))
    no_time = await read_status(settings)
    assert no_time.detail is not None and "updated_at" in no_time.detail

    status = {"state": "stopped", "updated_at": time.time(), "topics": {}}
    settings.status_file.write_text(json.dumps(status))
    stopped = await read_status(settings)
    assert stopped.detail is None and stopped.state == "stopped" and not stopped.up

    unconfigured = await read_status(None)
    assert not unconfigured.configured and unconfigured.detail is not None
