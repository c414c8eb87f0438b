"""The demo's HTTP client (httpx) with the network mocked by respx: what it sends, what it
keeps, and what a request without an answer becomes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from respx import MockRouter

from demo.client import Client, NoAnswer
from demo.progress import StepFailed

GATEWAY = "http://gateway.test:8080"


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(GATEWAY + "/") as client:
        yield client


def test_a_read_sends_the_token_and_says_who_answered(
    respx_mock: MockRouter, client: Client
) -> None:
    route = respx_mock.get(GATEWAY + "/search", params={"q": "lamp"}).respond(
        200, json={"total": 1}, headers={"X-Strangler-Upstream": "search"}
    )
    answer = client.get("/search?q=lamp", "TOKEN")
    assert (answer.status, answer.upstream, answer.json()) == (200, "search", {"total": 1})
    sent = route.calls.last.request.headers
    assert sent["authorization"] == "Bearer TOKEN"
    assert sent["accept-encoding"] == "identity"  # bodies compared as the server sent them
    assert client.get("/search?q=lamp").upstream == "search"
    assert "authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize(
    ("body", "content_type", "sent"),
    [
        ("on", "text/plain; charset=utf-8", b"on"),
        ({"name": "Lamp", "price": 12.5}, "application/json", b'{"name": "Lamp", "price": 12.5}'),
    ],
    ids=["text", "json"],
)
def test_a_write_sends_text_or_json(
    respx_mock: MockRouter, client: Client, body: object, content_type: str, sent: bytes
) -> None:
    route = respx_mock.post(GATEWAY + "/products").respond(201, content=b'{"id": 7}')
    answer = client.send("POST", "/products", body, "TOKEN")
    assert (answer.status, answer.upstream, answer.json()) == (201, None, {"id": 7})
    request = route.calls.last.request
    assert request.headers["content-type"] == content_type
    assert request.content == sent


def test_no_cookie_is_kept_between_requests(respx_mock: MockRouter, client: Client) -> None:
    """As curl: the gateway's sticky cookie would make all the demo's users one browser."""
    cookie = "strangler_sticky=abc; Path=/; HttpOnly; SameSite=Lax"
    route = respx_mock.route(url=GATEWAY + "/search").respond(200, headers={"Set-Cookie": cookie})
    client.get("/search")
    client.get("/search")
    client.send("PUT", "/search", "x")
    assert [call.request.headers.get("cookie") for call in route.calls] == [None, None, None]


def test_a_read_the_server_dropped_is_asked_once_more(
    respx_mock: MockRouter, client: Client
) -> None:
    route = respx_mock.get(GATEWAY + "/products/1").mock(
        side_effect=[httpx.RemoteProtocolError("Server disconnected"), httpx.Response(200)]
    )
    assert client.get("/products/1").status == 200
    assert route.call_count == 2


def test_a_read_dropped_twice_is_a_failed_step(respx_mock: MockRouter, client: Client) -> None:
    respx_mock.get(GATEWAY + "/products/1").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(NoAnswer, match=r"GET http://gateway\.test:8080/products/1: no answer"):
        client.get("/products/1")


def test_a_write_is_never_sent_twice(respx_mock: MockRouter, client: Client) -> None:
    route = respx_mock.post(GATEWAY + "/products").mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected")
    )
    with pytest.raises(NoAnswer, match=r"POST http://gateway\.test:8080/products: no answer"):
        client.send("POST", "/products", {"name": "Lamp"})
    assert route.call_count == 1


def test_no_answer_is_a_failed_step_naming_the_request(
    respx_mock: MockRouter, client: Client
) -> None:
    respx_mock.get(GATEWAY + "/_strangler/health").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )
    with pytest.raises(StepFailed) as failed:
        client.get("/_strangler/health")
    assert str(failed.value) == (
        "GET http://gateway.test:8080/_strangler/health: no answer "
        "(ConnectError: [Errno 111] Connection refused)"
    )


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(StepFailed, match="give an http:// or https:// URL"):
        Client("gateway.test:8080")
