"""The monolith's and the search service's GET /search answer byte for byte the same.

This is what lets the gateway's shadow comparison say "identical". Each backend pair seeds
the monolith, backfills the search service from it, and asks both the same questions; on
PostgreSQL both services share one database, as they may in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from legacy_monolith import manage as monolith
from legacy_monolith.asgi import create_app as create_monolith
from new_services.search import manage as search
from new_services.search.asgi import create_app as create_search

PRODUCTS = 400


@dataclass(frozen=True)
class Case:
    request: str  # "METHOD /path?query"
    expect: str  # "hits": 200 with results; "none": 200, no results; or the error status


CASES = [
    Case("GET /search", "hits"),
    Case("GET /search?q=lamp", "hits"),
    Case("GET /search?q=LAMP", "hits"),
    Case("GET /search?q=Lamp&size=5", "hits"),
    Case("GET /search?q=steel", "hits"),
    Case("GET /search?q=steel&category=tools", "hits"),
    Case("GET /search?q=STAINLESS+STEEL&category=kitchen&size=1&page=2", "hits"),
    Case("GET /search?category=lighting", "hits"),
    Case("GET /search?category=lighting&page=2&size=7", "hits"),
    Case("GET /search?category=decor&size=100", "hits"),
    Case("GET /search?q=lamp&page=2&size=50", "hits"),
    Case("GET /search?q=&category=&page=&size=", "hits"),
    Case("GET /search?size=1", "hits"),
    Case("GET /search?size=100&page=4", "hits"),
    Case("GET /search?q=lamp+steel", "none"),
    Case("GET /search?q=+", "hits"),
    Case("GET /search?q=%25", "hits"),
    Case("GET /search?q=100%25", "hits"),
    Case("GET /search?q=%25%25", "none"),
    Case("GET /search?q=_", "hits"),
    Case("GET /search?q=l_mp", "none"),
    Case("GET /search?q=l%25p", "none"),
    Case("GET /search?q=%5C", "hits"),
    Case("GET /search?q=%27", "hits"),
    Case("GET /search?q=kid%27s", "hits"),
    Case("GET /search?q=%22", "hits"),
    Case("GET /search?q=12%22+wall", "hits"),
    Case("GET /search?q=caf%C3%A9", "hits"),
    Case("GET /search?q=CAF%C3%89", "none"),
    Case("GET /search?q=%C3%BCber", "hits"),
    Case("GET /search?q=%C3%9Cber", "hits"),
    Case("GET /search?q=%C3%86r%C3%B8", "hits"),
    Case("GET /search?q=%C3%A6r%C3%B8", "none"),  # only A-Z fold: not "Ærø",
    Case("GET /search?q=%E6%97%A5%E6%9C%AC", "hits"),
    Case("GET /search?q=%FF%FE", "none"),
    Case("GET /search?q=lamp&q=steel", "hits"),
    Case("GET /search?q=zzzz", "none"),
    Case("GET /search?category=nope", "none"),
    Case("GET /search?q=lamp&page=999", "none"),
    Case("GET /search?page=1000000&size=100", "none"),
    Case(f"GET /search?q={'x' * 200}", "none"),
    Case(f"GET /search?q={'x' * 201}", "400"),
    Case("GET /search?q=a%00", "400"),
    Case(f"GET /search?category={'c' * 65}", "400"),
    Case("GET /search?page=abc", "400"),
    Case("GET /search?page=0", "400"),
    Case("GET /search?page=-1", "400"),
    Case("GET /search?page=1.5", "400"),
    Case("GET /search?page=%2B1", "400"),
    Case("GET /search?page=1000001", "400"),
    Case("GET /search?size=0", "400"),
    Case("GET /search?size=101", "400"),
    Case("GET /search?size=abc", "400"),
    Case("GET /search?page=abc&size=abc", "400"),
    Case("GET /search?q=a%00&page=abc", "400"),
    Case("POST /search", "405"),
    Case("GET /search/x", "404"),
]


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-monolith-sqlite-search"])
def services(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient]]:
    if request.param == "sqlite":
        monolith_url = f"sqlite:///{tmp_path / 'legacy.db'}"
        search_url = f"sqlite:///{tmp_path / 'search.db'}"
    elif request.param == "postgresql":
        monolith_url = search_url = request.getfixturevalue("pg_url")
    else:
        monolith_url = request.getfixturevalue("pg_url")
        search_url = f"sqlite:///{tmp_path / 'search.db'}"
    monolith.migrate(monolith_url)
    monolith.seed(monolith_url, products=PRODUCTS)
    search.migrate(search_url)
    assert search.backfill(monolith_url, search_url) == PRODUCTS
    with (
        TestClient(create_monolith(monolith_url)) as legacy,
        TestClient(create_search(search_url)) as extracted,
    ):
        yield legacy, extracted


def test_search_responses_are_byte_identical(services: tuple[TestClient, TestClient]) -> None:
    legacy, extracted = services
    mismatches, unexpected = [], []
    for case in CASES:
        method, url = case.request.split(" ", 1)
        ours, theirs = legacy.request(method, url), extracted.request(method, url)
        seen = [(r.status_code, r.headers["content-type"], r.content) for r in (ours, theirs)]
        if seen[0] != seen[1]:
            mismatches.append(f"{case.request}:\n  monolith {seen[0]}\n  search   {seen[1]}")
        if _outcome(ours.status_code, ours.json()) != case.expect:
            unexpected.append(f"{case.request}: {ours.status_code} {ours.text[:200]}")
    assert not mismatches, "\n".join(mismatches)
    # Identical but empty answers would prove nothing: each case must also mean what it says.
    assert not unexpected, "\n".join(unexpected)


def _outcome(status: int, body: dict[str, object]) -> str:
    if status != 200:
        return str(status)
    return "hits" if body["results"] else "none"


def test_the_cases_cover_hits_misses_and_errors() -> None:
    outcomes = [case.expect for case in CASES]
    assert outcomes.count("hits") >= 25 and outcomes.count("none") >= 8
    assert outcomes.count("400") >= 12
