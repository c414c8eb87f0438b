"""The environment compose gives a service: what `strangler demo --against` signs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo import compose_env
from gateway.config import table as config

ROOT = Path(__file__).resolve().parents[2]

COMPOSE = """\
services:
  gateway:
    environment:
      KEY: ${KEY:-from-the-default}
      DASH: ${DASH-dash-default}
      PLAIN: $PLAIN
      BRACED: ${BRACED}
      PRICE: "$$5"
  other:
    environment:
      - LISTED=${LISTED:-listed-default}
      - EMPTY
"""


@pytest.fixture
def compose(tmp_path: Path) -> Path:
    path = tmp_path / "docker-compose.yml"
    path.write_text(COMPOSE)
    return path


def test_a_default_applies_when_the_variable_is_unset_or_empty(compose: Path) -> None:
    assert compose_env.service_value(compose, "KEY", {}) == "from-the-default"
    assert compose_env.service_value(compose, "KEY", {"KEY": ""}) == "from-the-default"
    assert compose_env.service_value(compose, "KEY", {"KEY": "shell"}) == "shell"


def test_a_dash_default_applies_only_when_unset(compose: Path) -> None:
    assert compose_env.service_value(compose, "DASH", {}) == "dash-default"
    assert compose_env.service_value(compose, "DASH", {"DASH": ""}) == ""


def test_plain_references_and_dollars(compose: Path) -> None:
    assert compose_env.service_value(compose, "PLAIN", {"PLAIN": "p"}) == "p"
    assert compose_env.service_value(compose, "BRACED", {}) == ""
    assert compose_env.service_value(compose, "PRICE", {}) == "$5"


def test_list_environments_and_names_no_service_sets(compose: Path) -> None:
    assert compose_env.service_value(compose, "LISTED", {}) == "listed-default"
    assert compose_env.service_value(compose, "MISSING", {}) is None


def test_the_shell_wins_over_dotenv_and_dotenv_over_the_default(compose: Path) -> None:
    (compose.parent / ".env").write_text('# the project\'s .env\nKEY="from-dotenv"\n\nX=1\n')
    assert compose_env.service_value(compose, "KEY", {}) == "from-dotenv"
    assert compose_env.service_value(compose, "KEY", {"KEY": "shell"}) == "shell"


def test_the_nearest_compose_file_is_found(compose: Path) -> None:
    deep = compose.parent / "deploy" / "sub"
    deep.mkdir(parents=True)
    assert compose_env.find_compose(deep) == compose
    assert compose_env.find_compose(Path("/")) is None


def test_fill_sets_what_the_routes_file_names_and_the_shell_lacks(
    compose: Path, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "auth:\n  keys:\n    - {id: dev, secret_env: KEY}\n    - {secret_env: DASH}\n"
    )
    environ: dict[str, str] = {"DASH": "kept"}
    assert compose_env.fill(routes, compose, environ) == ["KEY"]
    assert environ == {"DASH": "kept", "KEY": "from-the-default"}
    assert compose_env.fill(routes, None, {}) == []


def test_the_compose_routes_file_loads_with_the_key_compose_gives_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routes = ROOT / "deploy" / "routes.compose.yaml"
    monkeypatch.delenv("STRANGLER_DEV_HS256_SECRET", raising=False)
    monkeypatch.delenv("STRANGLER_ENV", raising=False)
    monkeypatch.delenv("SEARCH_DATABASE_URL", raising=False)
    environ: dict[str, str] = {}
    compose = compose_env.find_compose(routes.parent)
    assert compose == ROOT / "docker-compose.yml"
    filled = compose_env.fill(routes, compose, environ)
    assert filled == ["STRANGLER_DEV_HS256_SECRET", "SEARCH_DATABASE_URL"]
    for name in filled:
        monkeypatch.setenv(name, environ[name])
    table = config.load(routes)
    (key,) = [key for key in table.auth.keys if key.dev]
    assert key.material == environ["STRANGLER_DEV_HS256_SECRET"].encode()
