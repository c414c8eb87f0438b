"""The search service: its endpoints, and the backfill from a seeded monolith database."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

import cli
from legacy_monolith import manage as monolith
from new_services.search import manage
from new_services.search.asgi import create_app
from new_services.search.backfill import BackfillError
from new_services.search.settings import DEFAULT_DATABASE_URL, Settings

PRODUCTS = 80


@pytest.fixture(scope="module")
def monolith_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("monolith") / "legacy.db"
    monolith.migrate(f"sqlite:///{path}")
    monolith.seed(f"sqlite:///{path}", products=PRODUCTS)
    return path


@pytest.fixture
def monolith_url(monolith_template: Path, tmp_path: Path) -> str:
    return f"sqlite:///{shutil.copy(monolith_template, tmp_path / 'legacy.db')}"


@pytest.fixture
def search_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    manage.migrate(url)
    return url


@pytest.fixture
def client(monolith_url: str, search_url: str) -> Iterator[TestClient]:
    manage.backfill(monolith_url, search_url)
    with TestClient(create_app(search_url)) as client:
        yield client


def documents(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT product_id, name, description, price_cents, category_slug, category_name"
                " FROM search_documents ORDER BY product_id"
            )
        )
        result = [tuple(row) for row in rows]
    engine.dispose()
    return result


def products(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT p.id, p.name, p.description, p.price_cents, c.slug, c.name"
                " FROM products p JOIN categories c ON c.id = p.category_id ORDER BY p.id"
            )
        )
        result = [tuple(row) for row in rows]
    engine.dispose()
    return result


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "search"}


def test_health_without_a_database_is_503() -> None:
    with TestClient(create_app("postgresql+psycopg://postgres@127.0.0.1:1/none")) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"


def test_backfill_copies_every_product(monolith_url: str, search_url: str) -> None:
    assert manage.backfill(monolith_url, search_url) == PRODUCTS
    assert documents(search_url) == products(monolith_url)
    assert len(documents(search_url)) == PRODUCTS


def test_backfill_again_replaces_the_documents(monolith_url: str, search_url: str) -> None:
    manage.backfill(monolith_url, search_url)
    engine = sa.create_engine(monolith_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM products WHERE id = 80"))
        connection.execute(sa.text("UPDATE products SET name = 'Renamed' WHERE id = 1"))
    engine.dispose()
    assert manage.backfill(monolith_url, search_url) == PRODUCTS - 1
    assert documents(search_url) == products(monolith_url)


def test_backfill_from_a_missing_database_fails_clearly(tmp_path: Path, search_url: str) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(BackfillError, match="no monolith database"):
        manage.backfill(f"sqlite:///{missing}", search_url)
    assert not missing.exists()


def test_backfill_from_a_database_without_products_fails_clearly(
    tmp_path: Path, search_url: str
) -> None:
    with pytest.raises(BackfillError, match="backfill failed: no such table"):
        manage.backfill(search_url, search_url)


def test_search_before_any_backfill_is_empty(search_url: str) -> None:
    with TestClient(create_app(search_url)) as client:
        body = client.get("/search?q=lamp").json()
    assert body == {
        "query": "lamp",
        "category": None,
        "page": 1,
        "size": 20,
        "total": 0,
        "results": [],
    }


def test_search_filters_orders_and_pages(client: TestClient) -> None:
    body = client.get("/search", params={"q": "STEEL", "size": 100}).json()
    assert 0 < body["total"] == len(body["results"])
    for hit in body["results"]:
        assert "steel" in (hit["name"] + hit["description"]).lower()
        assert list(hit) == ["id", "name", "description", "price", "category", "category_name"]
    keys = [(hit["name"], hit["id"]) for hit in body["results"]]
    assert keys == sorted(keys)
    second = client.get("/search", params={"q": "steel", "size": 2, "page": 2}).json()
    assert second["results"] == body["results"][2:4]
    kitchen = client.get("/search", params={"category": "kitchen"}).json()
    assert kitchen["total"] > 0
    assert {hit["category"] for hit in kitchen["results"]} == {"kitchen"}
    assert client.get("/search", params={"category": "nope"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/search?page=abc", "invalid_page"),
        ("/search?size=101", "invalid_size"),
        ("/search?q=%00", "invalid_query"),
        (f"/search?category={'c' * 65}", "invalid_category"),
    ],
)
def test_bad_parameters_are_400(client: TestClient, url: str, code: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error", "detail"] and response.json()["error"] == code


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert client.get("/products").json()["error"] == "not_found"
    response = client.post("/search")
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")


def test_manage_commands(
    monolith_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'search.db'}"
    assert manage.main(["migrate", "--database-url", url]) == 0
    args = ["backfill", "--from-database-url", monolith_url, "--database-url", url]
    assert cli.main(["search", *args]) == 0
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert manage.main(["backfill", "--from-database-url", missing, "--database-url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "search: schema at 0003",
        f"search: backfilled {PRODUCTS} documents",
    ]
    assert captured.err.startswith("search: no monolith database at")


def test_settings_default_to_a_database_under_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.from_env({}).database_url == DEFAULT_DATABASE_URL == "sqlite:///var/search.db"
    assert Settings.from_env({"SEARCH_DATABASE_URL": "x"}).database_url == "x"
    assert Settings.from_env({"DATABASE_URL": "monolith's"}).database_url == DEFAULT_DATABASE_URL
    monkeypatch.chdir(tmp_path)
    manage.migrate(DEFAULT_DATABASE_URL)
    assert (tmp_path / "var" / "search.db").is_file()


def test_dev_toggles_do_not_exist_unless_asked_for(client: TestClient) -> None:
    assert client.put("/_dev/toggles/rounded_prices", content="on").status_code == 404
    assert client.get("/_dev/toggles").status_code == 404


def test_rounded_prices_toggle_switches_at_run_time(monolith_url: str, search_url: str) -> None:
    manage.backfill(monolith_url, search_url)
    with TestClient(create_app(search_url, dev_toggles=True)) as client:
        exact = client.get("/search", params={"size": 100}).json()["results"]
        assert client.get("/_dev/toggles").json() == {"rounded_prices": False}
        assert client.put("/_dev/toggles/rounded_prices", content="on").json() == {
            "rounded_prices": True
        }
        rounded = client.get("/search", params={"size": 100}).json()["results"]
        client.put("/_dev/toggles/rounded_prices", content="off")
        again = client.get("/search", params={"size": 100}).json()["results"]
    assert again == exact
    assert [r["id"] for r in rounded] == [r["id"] for r in exact]
    for before, after in zip(exact, rounded, strict=True):
        units, cents = before["price"].split(".")
        tens = (int(units) * 100 + int(cents) + 5) // 10 * 10  # half up to 10 cents
        assert after["price"] == f"{tens // 100}.{tens % 100:02d}"
    assert any(b["price"] != a["price"] for b, a in zip(exact, rounded, strict=True))


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("nope", "on", 404, "unknown_toggle"),
        ("rounded_prices", "maybe", 400, "invalid_toggle_value"),
    ],
)
def test_bad_toggle_requests_are_json_errors(
    search_url: str, name: str, body: str, status: int, code: str
) -> None:
    with TestClient(create_app(search_url, dev_toggles=True)) as client:
        response = client.put(f"/_dev/toggles/{name}", content=body)
    assert (response.status_code, response.json()["error"]) == (status, code)
