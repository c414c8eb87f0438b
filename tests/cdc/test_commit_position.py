"""The monolith's X-Strangler-Commit-Position header: on SQLite the dev capture's position of
each changed table, the one the relay publishes; on PostgreSQL the WAL insert position
after COMMIT for each table the transaction changed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer
from starlette.testclient import TestClient

from cdc.capture import Capture
from cdc.cluster import MockCluster
from cdc.envelope import Change
from cdc.envelope import parse as parse_event
from cdc.errors import Origin
from legacy_monolith import manage
from legacy_monolith.asgi import create_app
from legacy_monolith.commit_position import HEADER

ADMIN = {"X-User-Id": "alice", "X-User-Roles": "admin,customer"}
PRODUCT = {"name": "Position Lamp", "price": "12.50", "category": "lighting", "stock": 5}


def positions(value: str) -> dict[str, int]:
    entries = (entry.strip().partition("=") for entry in value.split(","))
    return {table: int(position) for table, _, position in entries}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("commit-position") / "template.db"
    manage.migrate(f"sqlite:///{path}")
    manage.seed(f"sqlite:///{path}", products=20)
    return path


@pytest.fixture
def sqlite_url(template: Path, tmp_path: Path) -> str:
    return f"sqlite:///{shutil.copy(template, tmp_path / 'legacy.db')}"


@pytest.fixture
def captured(sqlite_url: str) -> Iterator[Capture]:
    capture = Capture(sqlite_url, "legacy", ["categories", "products"])
    capture.install()
    yield capture
    capture.close()


def test_without_the_capture_a_sqlite_write_has_no_position(sqlite_url: str) -> None:
    with TestClient(create_app(sqlite_url)) as client:
        response = client.post("/products", json=PRODUCT, headers=ADMIN)
    assert response.status_code == 201
    assert HEADER.lower() not in response.headers


def test_a_sqlite_write_reports_the_position_the_relay_publishes(
    sqlite_url: str, captured: Capture
) -> None:
    with TestClient(create_app(sqlite_url)) as client:
        created = client.post("/products", json=PRODUCT, headers=ADMIN)
        product = created.json()["id"]
        renamed = client.put(
            f"/products/{product}", json={**PRODUCT, "name": "Renamed Lamp"}, headers=ADMIN
        )
        refused = client.post("/products", json={**PRODUCT, "category": "nope"}, headers=ADMIN)
    assert created.status_code == 201 and renamed.status_code == 200
    first = positions(created.headers[HEADER])
    second = positions(renamed.headers[HEADER])
    assert list(first) == ["public.products"] and list(second) == ["public.products"]
    assert second["public.products"] > first["public.products"]
    assert refused.status_code == 422 and HEADER.lower() not in refused.headers

    # The relay gives each change's event that same number: commit part and lsn.
    cluster = MockCluster()
    producer = cluster.producer()
    captured.create_topics(producer)
    relayed = captured.relay(producer)
    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": "commit-position",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(["legacy.public.products"])
    published: list[tuple[str | None, str]] = []  # (position, name) in stream order
    deadline = time.monotonic() + 30
    try:
        while len(published) < relayed and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            origin = Origin(message.topic(), message.partition(), message.offset())
            event = parse_event(origin, message.key(), message.value(), "legacy")
            assert isinstance(event, Change) and event.after is not None
            published.append((event.position, event.after["name"]))
    finally:
        consumer.close()

    def position(seq: int) -> str:
        return f"{seq:016x}/{seq:016x}"

    # Each answer names its transaction's last change (the PUT's is its last UPDATE).
    assert (position(first["public.products"]), "Position Lamp") in published
    assert published[-1] == (position(second["public.products"]), "Renamed Lamp")


def test_an_order_reports_the_captured_table_it_changed(sqlite_url: str, captured: Capture) -> None:
    """Orders are not captured; the stock they take from products is."""
    with TestClient(create_app(sqlite_url)) as client:
        order = client.post(
            "/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=ADMIN
        )
        deleted = client.delete(
            f"/products/{client.post('/products', json=PRODUCT, headers=ADMIN).json()['id']}",
            headers=ADMIN,
        )
    assert order.status_code == 201, order.text
    assert list(positions(order.headers[HEADER])) == ["public.products"]
    assert deleted.status_code == 204
    assert list(positions(deleted.headers[HEADER])) == ["public.products"]
    with captured.engine.connect() as connection:
        last = connection.exec_driver_sql(
            "SELECT max(seq) FROM cdc_changes WHERE tbl = 'products'"
        ).scalar_one()
    assert positions(deleted.headers[HEADER]) == {"public.products": last}


def _insert_lsn(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_postgresql_write_reports_the_wal_position_after_its_commit(pg_url: str) -> None:
    manage.migrate(pg_url)
    manage.seed(pg_url, products=20)
    with TestClient(create_app(pg_url)) as client:
        before = _insert_lsn(pg_url)
        created = client.post("/products", json=PRODUCT, headers=ADMIN)
        after = _insert_lsn(pg_url)
        order = client.post(
            "/orders", json={"items": [{"product_id": 1, "quantity": 1}]}, headers=ADMIN
        )
        refused = client.post("/products", json={**PRODUCT, "category": "nope"}, headers=ADMIN)
    assert created.status_code == 201 and order.status_code == 201, order.text
    reported = positions(created.headers[HEADER])
    assert list(reported) == ["public.products"]
    # At or past the end of the write's own commit record, which came after `before`.
    assert before < reported["public.products"] <= after
    ordered = positions(order.headers[HEADER])
    assert sorted(ordered) == ["public.order_items", "public.orders", "public.products"]
    assert len(set(ordered.values())) == 1  # one transaction, one commit
    assert min(ordered.values()) > reported["public.products"]
    assert refused.status_code == 422 and HEADER.lower() not in refused.headers
