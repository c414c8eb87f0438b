"""The demo's HTTP client (httpx): what a user's curl sends to the gateway, with development
tokens.

Reads share one kept-alive connection per base URL (the canary steps ask hundreds of
times); a write gets a connection of its own, so it is never sent on a connection the
server may have closed meanwhile, and never sent twice. Like curl, it keeps no cookies: the
gateway's sticky cookie would otherwise make every user of the demo one browser.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpx

from demo.progress import StepFailed
from gateway.config.table import RouteTable
from gateway.identity import tokens

TOKEN_TTL = 3600.0
UPSTREAM_HEADER = "x-strangler-upstream"


class NoAnswer(StepFailed):
    """A request got no HTTP answer: refused, reset, timed out."""


class _Dropped(NoAnswer):
    """The server closed the connection before answering. httpx drops a kept connection it
    finds closed before using it, but the server can still close it between that check and
    the request: get() asks once more on a new connection (a read has no effect on the
    server to repeat)."""


_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    upstream: str | None  # X-Strangler-Upstream: who answered
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def brief(self) -> str:
        return f"{self.status} from {self.upstream!r}: {self.body[:200]!r}"


class Client:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StepFailed(f"{base_url!r}: give an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self._reads = self._client(timeout, keep_alive=1)
        self._writes = self._client(timeout, keep_alive=0)

    def _client(self, timeout: float, keep_alive: int) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=keep_alive),
            # As curl and http.client: bodies as the server sends them, compared byte for byte.
            headers={"Accept-Encoding": "identity"},
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # accepts none
            # The system's CAs (a stack behind a company CA), not httpx's certifi bundle; no
            # proxy from the environment: `--against localhost:8080` means this machine.
            verify=ssl.create_default_context(),
            trust_env=False,
        )

    def get(self, path: str, token: str | None = None) -> Reply:
        try:
            return self._exchange(self._reads, "GET", path, None, token)
        except _Dropped:
            return self._exchange(self._reads, "GET", path, None, token)

    def send(self, method: str, path: str, body: object, token: str | None = None) -> Reply:
        """A write on a connection of its own: a str is sent as text, anything else as JSON."""
        if isinstance(body, str):
            data, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        return self._exchange(self._writes, method, path, (data, content_type), token)

    def close(self) -> None:
        self._reads.close()
        self._writes.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exchange(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        body: tuple[bytes, str] | None,
        token: str | None,
    ) -> Reply:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = body
        try:
            response = client.request(method, path, content=data, headers=headers)
        except httpx.HTTPError as exc:
            failure = _Dropped if isinstance(exc, _DROPPED) else NoAnswer
            what = f"{method} {self.base_url}{path}: no answer ({type(exc).__name__}: {exc})"
            raise failure(what) from exc
        return Reply(response.status_code, response.headers.get(UPSTREAM_HEADER), response.content)


class Tokens:
    """Development tokens signed with the routes file's `dev: true` key, with its issuer
    and audience: what `strangler token --sub USER --roles ...` prints, one per user."""

    def __init__(self, table: RouteTable) -> None:
        dev = [key for key in table.auth.keys if key.dev]
        if not dev:
            raise StepFailed(f"{table.source}: no auth key is marked dev: true to sign with")
        self.key = dev[0]
        self.claims = {
            name: value
            for name, value in (("iss", table.auth.issuer), ("aud", table.auth.audience))
            if value
        }
        self._minted: dict[tuple[str, tuple[str, ...]], str] = {}

    def of(self, sub: str, *roles: str) -> str:
        token = self._minted.get((sub, roles))
        if token is None:
            token = tokens.mint(self.key, sub, list(roles), TOKEN_TTL, **self.claims)
            self._minted[(sub, roles)] = token
        return token

    def admin(self) -> str:
        return self.of("demo", "admin")
