"""The demo's HTTP client: what a user's curl sends to the gateway, with development tokens.

One keep-alive connection per base URL carries the reads (the canary steps ask hundreds of
times); a write gets a connection of its own, so it is never sent on a connection the
server may have closed meanwhile, and never sent twice.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway import tokens
from gateway.config import RouteTable
from gateway.demo_progress import StepFailed

TOKEN_TTL = 3600.0
UPSTREAM_HEADER = "x-strangler-upstream"
# A keep-alive connection the server closed while idle fails on first use; a read is
# sent again once on a new connection (it has no effect on the server to repeat).
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True, slots=True)
class Answer:
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
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._timeout = timeout
        self._kept: http.client.HTTPConnection | None = None

    def get(self, path: str, token: str | None = None) -> Answer:
        if self._kept is not None:
            try:
                return self._exchange(self._kept, "GET", path, None, token)
            except _STALE:
                pass  # the server closed the idle connection: once more on a new one
            except BaseException:
                self.close()
                raise
            self.close()
        self._kept = self._connect()
        try:
            return self._exchange(self._kept, "GET", path, None, token)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, path: str, body: object, token: str | None = None) -> Answer:
        """A write on a connection of its own: a str is sent as text, anything else as JSON."""
        if isinstance(body, str):
            data, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        connection = self._connect()
        try:
            return self._exchange(connection, method, path, (data, content_type), token)
        finally:
            connection.close()

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self._timeout)

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: tuple[bytes, str] | None,
        token: str | None,
    ) -> Answer:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = body
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.getheader(UPSTREAM_HEADER), response.read())


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
