"""The authorization input document: OPA-Envoy's shape, safe headers, parsed path and query."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from gateway.config.paths import PathError, normalise
from gateway.identity.decision_input import build_input, parse_path, parse_query

HEADERS = [
    (b"host", b"shop.test"),
    (b"accept", b"*/*"),
    (b"authorization", b"Bearer secret.token.here"),
    (b"proxy-authorization", b"Basic c2VjcmV0"),
    (b"cookie", b"session=secret"),
    (b"x-user-id", b"forged"),
    (b"x-user-roles", b"admin"),
    (b"x-forwarded-for", b"10.0.0.1"),
    (b"x-forwarded-user", b"forged"),
    (b"forwarded", b"for=10.0.0.1"),
    (b"x-request-id", b"r-1"),
    (b"accept", b"text/html"),
]


def build(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "method": "GET",
        "path": "/products/42",
        "query": b"q=red+shoes&page=2",
        "headers": HEADERS,
        "scheme": "https",
        "peer": "203.0.113.9",
        "claims": {"sub": "alice", "roles": ["buyer"]},
        "route": "catalogue",
        "target": "legacy",
    }
    return build_input(**(arguments | overrides))


def test_the_document_has_opa_envoys_shape_and_the_gateways_keys() -> None:
    assert build() == {
        "attributes": {
            "request": {
                "http": {
                    "method": "GET",
                    "path": "/products/42?q=red+shoes&page=2",
                    "host": "shop.test",
                    "scheme": "https",
                    "headers": {
                        "host": "shop.test",
                        "accept": "*/*,text/html",
                        "x-request-id": "r-1",
                    },
                }
            },
            "source": {"address": {"socketAddress": {"address": "203.0.113.9"}}},
        },
        "parsed_path": ["products", "42"],
        "parsed_query": {"q": ["red shoes"], "page": ["2"]},
        "claims": {"sub": "alice", "roles": ["buyer"]},
        "route": "catalogue",
        "target": "legacy",
    }


def test_credentials_and_gateway_set_headers_never_reach_the_policy() -> None:
    headers = build()["attributes"]["request"]["http"]["headers"]
    for name in (
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-user-id",
        "x-user-roles",
        "x-forwarded-for",
        "x-forwarded-user",
        "forwarded",
    ):
        assert name not in headers
    assert "secret" not in repr(build())


def test_no_query_no_question_mark() -> None:
    document = build(query=b"")
    assert document["attributes"]["request"]["http"]["path"] == "/products/42"
    assert document["parsed_query"] == {}


def test_unknown_peer_and_host_and_no_route() -> None:
    document = build(peer=None, headers=[], route=None, claims={})
    assert "source" not in document["attributes"]
    assert document["attributes"]["request"]["http"]["host"] == ""
    assert document["route"] is None and document["claims"] == {}


def test_claims_are_copied_into_a_plain_dict() -> None:
    claims = MappingProxyType({"sub": "alice"})
    document = build(claims=claims)
    assert type(document["claims"]) is dict and document["claims"] == {"sub": "alice"}


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/", [""]),
        ("/products", ["products"]),
        ("/products/", ["products", ""]),
        ("/users/jo%20ann", ["users", "jo ann"]),
        ("/caf%C3%A9/menu", ["café", "menu"]),
        ("/a%25b", ["a%b"]),
    ],
)
def test_parsed_path(path: str, segments: list[str]) -> None:
    assert parse_path(path) == segments


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("", {}),
        ("a=1&a=2", {"a": ["1", "2"]}),
        ("flag&empty=", {"flag": [""], "empty": [""]}),
        ("q=x+y&p=%2F%26", {"q": ["x y"], "p": ["/&"]}),
        ("a%20b=c=d", {"a b": ["c=d"]}),
        ("&&a=1&", {"a": ["1"]}),
        ("name=%E2%82%AC", {"name": ["€"]}),
    ],
)
def test_parsed_query(raw: str, parsed: dict[str, list[str]]) -> None:
    assert parse_query(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    [
        b"//admin",
        b"/x//admin",
        b"/search/..%2fusers",
        b"/public/..%2F..%2Fadmin",
        b"/api%2e/admin",
        b"/p/%2e%2e/admin",
        b"/admin%2F",
        b"/a%5Cb",
        b"/a%00b",
        b"/admin%3Bx",
        b"/admin;x=y",
        b"/admin.",
        b"/admin/",
        b"/a/./b/../../admin",
        b"/../admin",
    ],
)
def test_parsed_path_of_a_normalised_path_holds_no_tricks(raw: bytes) -> None:
    """What the policy sees: the path is normalised (or refused) before the input is built."""
    try:
        path = normalise(raw)
    except PathError:
        return  # 400 before any policy runs
    segments = parse_path(path)
    assert "." not in segments and ".." not in segments
    assert "" not in segments[:-1]  # only a trailing slash leaves an empty (last) segment
    assert all("/" not in s and "\\" not in s and "\0" not in s for s in segments)
