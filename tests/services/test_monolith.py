"""The legacy monolith over HTTP: every endpoint, the identity-header rules, bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import cli
from legacy_monolith import manage, money
from legacy_monolith.asgi import create_app
from legacy_monolith.seed import SPECIAL_PRODUCTS
from legacy_monolith.settings import DEFAULT_DATABASE_URL, Settings

PRODUCTS = 60
ALICE = {"X-User-Id": "alice", "X-User-Roles": "admin,customer"}
BOB = {"X-User-Id": "bob", "X-User-Roles": "customer"}
CAROL = {"X-User-Id": "carol", "X-User-Roles": "customer"}
NEW_PRODUCT = {
    "name": "Brass Reading Lamp",
    "description": "Warm light.",
    "price": "49.5",
    "category": "lighting",
    "stock": 3,
}


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated and seeded once; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("monolith") / "template.db"
    manage.migrate(f"sqlite:///{path}")
    manage.seed(f"sqlite:///{path}", products=PRODUCTS)
    return path


@pytest.fixture
def database_url(request: pytest.FixtureRequest, seeded_template: Path, tmp_path: Path) -> str:
    """A seeded SQLite copy; PostgreSQL for the tests marked BOTH_DATABASES."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{shutil.copy(seeded_template, tmp_path / 'legacy.db')}"
    url: str = request.getfixturevalue("pg_url")
    manage.migrate(url)
    manage.seed(url, products=PRODUCTS)
    return url


BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(database_url)) as client:
        yield client


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error", "detail"]
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "legacy_monolith"}


def test_health_without_a_database_is_503() -> None:
    with TestClient(create_app("postgresql+psycopg://postgres@127.0.0.1:1/none")) as client:
        assert_error(client.get("/health"), 503, "database_unavailable")


@BOTH_DATABASES
def test_search_matches_name_or_description_case_insensitively(client: TestClient) -> None:
    body = client.get("/search", params={"q": "LaMp", "size": 100}).json()
    assert body["query"] == "LaMp" and body["category"] is None
    assert 0 < len(body["results"]) == body["total"] < PRODUCTS
    for hit in body["results"]:
        assert "lamp" in (hit["name"] + hit["description"]).lower()
    assert [(h["name"], h["id"]) for h in body["results"]] == sorted(
        (h["name"], h["id"]) for h in body["results"]
    )


def test_search_filters_by_category_and_pages(client: TestClient) -> None:
    whole = client.get("/search", params={"category": "lighting", "size": 100}).json()
    assert whole["total"] == len(whole["results"]) >= 3
    assert {hit["category"] for hit in whole["results"]} == {"lighting"}
    assert {hit["category_name"] for hit in whole["results"]} == {"Lighting"}
    pages = [
        client.get("/search", params={"category": "lighting", "size": 1, "page": page}).json()
        for page in (1, 2)
    ]
    assert pages[0]["results"] + pages[1]["results"] == whole["results"][:2]
    beyond = client.get("/search", params={"category": "lighting", "page": 1000}).json()
    assert beyond["results"] == [] and beyond["total"] == whole["total"]


@pytest.mark.parametrize(
    ("q", "name"),
    [("%", "100% Linen Throw"), ("_", "Tool_Box Organiser"), ("\\", "Back\\slash Shelf")],
)
def test_search_matches_like_wildcards_literally(client: TestClient, q: str, name: str) -> None:
    body = client.get("/search", params={"q": q}).json()
    assert [hit["name"] for hit in body["results"]] == [name]


def test_search_response_bytes_are_compact_utf8(client: TestClient) -> None:
    response = client.get("/search", params={"q": "日本"})
    assert response.headers["content-type"] == "application/json"
    assert response.content.startswith(b'{"query":"\xe6\x97\xa5\xe6\x9c\xac","category":null,')
    compact = json.dumps(response.json(), ensure_ascii=False, separators=(",", ":"))
    assert response.content == compact.encode()


@BOTH_DATABASES
def test_list_products_pages_by_id(client: TestClient) -> None:
    body = client.get("/products", params={"page": 2, "size": 25}).json()
    assert (body["page"], body["size"], body["total"]) == (2, 25, PRODUCTS)
    assert [product["id"] for product in body["results"]] == list(range(26, 51))
    first = client.get("/products", params={"size": 1}).json()["results"][0]
    assert list(first) == [
        "id", "name", "description", "price", "category", "stock", "updated_at",
    ]  # fmt: skip
    assert first["name"] == SPECIAL_PRODUCTS[0][1]
    assert first["updated_at"] == "2025-01-01T00:00:00.000000Z"


@BOTH_DATABASES
def test_product_lifecycle_as_admin(client: TestClient) -> None:
    created = client.post("/products", json=NEW_PRODUCT, headers=ALICE)
    assert created.status_code == 201
    product = created.json()
    assert created.headers["location"] == f"/products/{product['id']}"
    assert (product["price"], product["category"], product["stock"]) == ("49.50", "lighting", 3)
    assert client.get(f"/products/{product['id']}").json() == product
    hits = client.get("/search", params={"q": "brass reading"}).json()["results"]
    assert [hit["id"] for hit in hits] == [product["id"]]

    changed = {**NEW_PRODUCT, "price": "45", "category": "decor", "description": ""}
    updated = client.put(f"/products/{product['id']}", json=changed, headers=ALICE).json()
    assert (updated["price"], updated["category"], updated["description"]) == ("45.00", "decor", "")
    assert updated["updated_at"] >= product["updated_at"]

    assert client.delete(f"/products/{product['id']}", headers=ALICE).status_code == 204
    assert_error(client.get(f"/products/{product['id']}"), 404, "product_not_found")


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/products"), ("PUT", "/products/1"), ("DELETE", "/products/1")]
)
def test_product_writes_need_the_admin_role(client: TestClient, method: str, path: str) -> None:
    assert_error(client.request(method, path, json=NEW_PRODUCT), 401, "unauthenticated")
    assert_error(client.request(method, path, json=NEW_PRODUCT, headers=BOB), 403, "forbidden")
    roles_only = {"X-User-Roles": "admin"}  # roles without a user are no identity
    assert_error(
        client.request(method, path, json=NEW_PRODUCT, headers=roles_only), 401, "unauthenticated"
    )
    assert client.get("/products/1").json()["name"] == SPECIAL_PRODUCTS[0][1]


@BOTH_DATABASES
def test_deleting_an_ordered_product_conflicts(client: TestClient) -> None:
    order = client.post("/orders", json={"items": [{"product_id": 5, "quantity": 1}]}, headers=BOB)
    assert order.status_code == 201
    assert_error(client.delete("/products/5", headers=ALICE), 409, "product_in_use")
    assert client.get("/products/5").status_code == 200


@BOTH_DATABASES
def test_users_see_themselves_and_admins_see_everyone(client: TestClient) -> None:
    bob = client.get("/users/2", headers=BOB).json()
    assert bob == {
        "id": 2,
        "username": "bob",
        "email": "bob@example.com",
        "roles": ["customer"],
        "created_at": "2025-01-01T00:00:00.000000Z",
    }
    assert_error(client.get("/users/1", headers=BOB), 403, "forbidden")
    assert_error(client.get("/users/999", headers=BOB), 403, "forbidden")
    assert client.get("/users/2", headers=ALICE).json() == bob
    assert_error(client.get("/users/999", headers=ALICE), 404, "user_not_found")
    assert_error(client.get("/users/2"), 401, "unauthenticated")
    assert_error(client.get("/users/2", headers={"X-User-Id": "mallory"}), 401, "unknown_user")


@BOTH_DATABASES
def test_orders_are_the_callers_own(client: TestClient) -> None:
    assert_error(client.get("/orders"), 401, "unauthenticated")
    bobs = client.get("/orders", headers=BOB).json()
    carols = client.get("/orders", headers=CAROL).json()
    assert bobs["total"] == carols["total"] == 4
    assert not {o["id"] for o in bobs["results"]} & {o["id"] for o in carols["results"]}
    for order in bobs["results"]:
        total = sum(int(money.parse_price(i["price"]) or 0) * i["quantity"] for i in order["items"])
        assert money.format_cents(total) == order["total"]


@BOTH_DATABASES
def test_placing_an_order_takes_stock(client: TestClient) -> None:
    stock = {pid: client.get(f"/products/{pid}").json() for pid in (10, 11)}
    lines = [{"product_id": 11, "quantity": 1}, {"product_id": 10, "quantity": 2}]
    placed = client.post("/orders", json={"items": lines}, headers=CAROL)
    assert placed.status_code == 201
    order = placed.json()
    assert order["status"] == "placed"
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(10, 2), (11, 1)]
    expected = 2 * (money.parse_price(stock[10]["price"]) or 0) + (
        money.parse_price(stock[11]["price"]) or 0
    )
    assert order["total"] == money.format_cents(expected)
    assert client.get("/products/10").json()["stock"] == stock[10]["stock"] - 2
    assert client.get("/orders", headers=CAROL).json()["total"] == 5
    assert client.get("/orders", headers=BOB).json()["total"] == 4


@BOTH_DATABASES
def test_a_short_order_changes_nothing(client: TestClient) -> None:
    scarce = {**NEW_PRODUCT, "stock": 1}
    assert client.put("/products/13", json=scarce, headers=ALICE).status_code == 200
    before = client.get("/products/12").json()["stock"]
    lines = [{"product_id": 12, "quantity": 1}, {"product_id": 13, "quantity": 2}]
    response = client.post("/orders", json={"items": lines}, headers=BOB)
    assert_error(response, 409, "insufficient_stock")
    assert client.get("/products/12").json()["stock"] == before
    assert client.get("/products/13").json()["stock"] == 1
    assert client.get("/orders", headers=BOB).json()["total"] == 4


LONG = "x" * 201
BAD_QUERIES = [
    ("/search?page=abc", "invalid_page"),
    ("/search?page=0", "invalid_page"),
    ("/search?page=-1", "invalid_page"),
    ("/search?page=1.5", "invalid_page"),
    ("/search?page=%2B1", "invalid_page"),
    ("/search?page=%201", "invalid_page"),
    ("/search?page=1_0", "invalid_page"),
    ("/search?page=%D9%A1", "invalid_page"),
    ("/search?page=1000001", "invalid_page"),
    ("/search?page=99999999999999999999999", "invalid_page"),
    ("/search?size=0", "invalid_size"),
    ("/search?size=101", "invalid_size"),
    ("/search?size=ten", "invalid_size"),
    (f"/search?q={LONG}", "invalid_query"),
    ("/search?q=a%00b", "invalid_query"),
    (f"/search?category={'c' * 65}", "invalid_category"),
    ("/search?q=a%00&page=abc", "invalid_query"),
    ("/products?page=abc", "invalid_page"),
    ("/products?size=1000", "invalid_size"),
    ("/products/abc", "invalid_id"),
    ("/products/0", "invalid_id"),
    ("/products/-3", "invalid_id"),
    ("/products/99999999999", "invalid_id"),
]


@pytest.mark.parametrize(("url", "code"), BAD_QUERIES)
def test_bad_query_parameters_are_400(client: TestClient, url: str, code: str) -> None:
    assert_error(client.get(url, headers=BOB), 400, code)


def test_bad_pagination_of_orders_is_400(client: TestClient) -> None:
    assert_error(client.get("/orders?size=0", headers=BOB), 400, "invalid_size")


def _product(**changes: Any) -> bytes:
    return json.dumps({**NEW_PRODUCT, **changes}).encode()


BAD_PRODUCTS = [
    (b"not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"\xff\xfe\xfa", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b"[" * 100_000, 400, "invalid_json"),
    (b"{}", 422, "missing_field"),
    (json.dumps({"name": "x"}).encode(), 422, "missing_field"),
    (_product(name="   "), 422, "invalid_field"),
    (_product(name=7), 422, "invalid_field"),
    (_product(name="x" * 201), 422, "invalid_field"),
    (_product(name="nul\x00"), 422, "invalid_field"),
    (b'{"name": "\\ud800", "price": "1", "category": "lighting"}', 422, "invalid_field"),
    (_product(price=12.34), 422, "invalid_field"),
    (_product(price="12.345"), 422, "invalid_field"),
    (_product(price="-1"), 422, "invalid_field"),
    (_product(price="1e3"), 422, "invalid_field"),
    (_product(price="99999999"), 422, "invalid_field"),
    (_product(stock=-1), 422, "invalid_field"),
    (_product(stock=True), 422, "invalid_field"),
    (_product(stock="3"), 422, "invalid_field"),
    (_product(stock=2**40), 422, "invalid_field"),
    (_product(category=None), 422, "missing_field"),
    (_product(category="nope"), 422, "unknown_category"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_PRODUCTS)
@pytest.mark.parametrize("method_path", ["POST /products", "PUT /products/1"])
def test_bad_product_bodies_are_4xx(
    client: TestClient, method_path: str, body: bytes, status: int, code: str
) -> None:
    method, path = method_path.split()
    headers = {**ALICE, "Content-Type": "application/json"}
    assert_error(client.request(method, path, content=body, headers=headers), status, code)


@BOTH_DATABASES
def test_updating_a_missing_product_is_404(client: TestClient) -> None:
    assert_error(
        client.put("/products/9999", json=NEW_PRODUCT, headers=ALICE), 404, "product_not_found"
    )
    assert_error(client.delete("/products/9999", headers=ALICE), 404, "product_not_found")


BAD_ORDERS = [
    (b"{", 400, "invalid_json"),
    (b"{}", 422, "missing_field"),
    (b'{"items": []}', 422, "invalid_field"),
    (b'{"items": "all"}', 422, "invalid_field"),
    (b'{"items": [1]}', 422, "invalid_field"),
    (json.dumps({"items": [{"product_id": 1}] * 51}).encode(), 422, "invalid_field"),
    (b'{"items": [{"product_id": 1}]}', 422, "missing_field"),
    (b'{"items": [{"product_id": 1, "quantity": 0}]}', 422, "invalid_field"),
    (b'{"items": [{"product_id": 1, "quantity": 101}]}', 422, "invalid_field"),
    (b'{"items": [{"product_id": 1, "quantity": 1.0}]}', 422, "invalid_field"),
    (b'{"items": [{"product_id": "1", "quantity": 1}]}', 422, "invalid_field"),
    (b'{"items": [{"product_id": 1099511627776, "quantity": 1}]}', 422, "invalid_field"),
    (
        b'{"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]}',
        422,
        "invalid_field",
    ),
    (b'{"items": [{"product_id": 99999, "quantity": 1}]}', 422, "unknown_product"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_ORDERS)
def test_bad_orders_are_4xx(client: TestClient, body: bytes, status: int, code: str) -> None:
    headers = {**BOB, "Content-Type": "application/json"}
    assert_error(client.post("/orders", content=body, headers=headers), status, code)


def test_orders_need_a_known_user(client: TestClient) -> None:
    good = {"items": [{"product_id": 1, "quantity": 1}]}
    assert_error(client.post("/orders", json=good), 401, "unauthenticated")
    assert_error(
        client.post("/orders", json=good, headers={"X-User-Id": " "}), 401, "unauthenticated"
    )
    assert_error(
        client.post("/orders", json=good, headers={"X-User-Id": "eve"}), 401, "unknown_user"
    )


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    response = client.patch("/products/1", headers=ALICE)
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
    assert client.head("/search?q=lamp").status_code == 200


def test_seeding_is_deterministic_and_happens_once(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    for url in urls:
        manage.migrate(url)
        assert manage.seed(url, products=30).created
    again = manage.seed(urls[0], products=500)
    assert not again.created and (again.products, again.users, again.orders) == (30, 3, 12)
    bodies = []
    for url in urls:
        with TestClient(create_app(url)) as client:
            bodies.append(client.get("/products?size=100").content)
    assert bodies[0] == bodies[1]


def test_manage_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'legacy.db'}"
    assert manage.main(["migrate", "--database-url", url]) == 0
    assert cli.main(["monolith", "seed", "--products", "12", "--database-url", url]) == 0
    assert manage.main(["seed", "--database-url", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "legacy_monolith: schema at 0001",
        "legacy_monolith: seeded 12 categories, 12 products, 3 users, 12 orders",
        "legacy_monolith: already seeded, left alone: "
        "12 categories, 12 products, 3 users, 12 orders",
    ]


def test_settings_default_to_a_database_under_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.from_env({}).database_url == DEFAULT_DATABASE_URL == "sqlite:///var/legacy.db"
    assert Settings.from_env({"DATABASE_URL": "sqlite:///x.db"}).database_url == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    manage.migrate(DEFAULT_DATABASE_URL)
    assert (tmp_path / "var" / "legacy.db").is_file()
