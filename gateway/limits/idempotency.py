"""Idempotency keys: the `IdempotencyStore` port, its two adapters, and the pieces of a
request that the gateway keeps (draft-ietf-httpapi-idempotency-key-header-07).

A key moves through two states, both with an expiry so that nothing stays stuck:

    (absent) --claim--> pending (token, fingerprint; expires after `lock`)
    pending  --complete(token)--> done (fingerprint, the answer; expires after `ttl`)
    pending  --release(token)--> (absent)          the first request failed: run it again

`claim` is atomic (Redis `SET NX PX ... GET`, one round trip): of two concurrent requests
with one key exactly one runs. `complete` and `release` act only while the caller's own
claim holds (a Lua compare-and-set), so a first request that outlived its lock cannot
overwrite the record of the request that claimed the key after it.

Values are bytes, the same in both adapters: `p|TOKEN|FINGERPRINT` while pending,
`d|FINGERPRINT|{json head}\\n<body>` once done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.base.errors import BadRequest
from gateway.base.types import Message, Receive, Send
from gateway.limits.store import RedisStore, unexpired

Headers = list[tuple[bytes, bytes]]
HEADER = b"idempotency-key"
_MAX_KEY = 255
# An answer the client is asked to retry is not kept: the retry must reach the upstream.
_RETRYABLE = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A first request's response as the client got it."""

    status: int
    headers: Headers
    body: bytes | None  # None: larger than max_response, so not kept


@dataclass(frozen=True, slots=True)
class Held:
    """What holds a key that could not be claimed."""

    fingerprint: str
    answer: StoredResponse | None  # None: the first request is still running


class IdempotencyStore(Protocol):
    async def claim(self, key: str, fingerprint: str, token: str, lock: float) -> Held | None:
        """Take `key` for a first request (None), or say what already holds it."""
        ...

    async def complete(
        self, key: str, token: str, fingerprint: str, answer: StoredResponse, ttl: float
    ) -> bool:
        """Keep the answer, if `token`'s claim still holds the key."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Free the key, if `token`'s claim still holds it."""
        ...


def request_key(headers: Headers) -> str | None:
    """The Idempotency-Key, a structured-field string (RFC 8941 3.3.3) or a bare token."""
    values = [value for name, value in headers if name == HEADER]
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("more than one Idempotency-Key header")
    text = values[0].decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 0 < len(text) <= _MAX_KEY or not (text.isascii() and text.isprintable()):
        raise BadRequest(f"Idempotency-Key must be 1 to {_MAX_KEY} printable ASCII characters")
    return text


def fingerprint(method: str, target: bytes, body: bytes) -> str:
    """What makes a repeat the same request: method, path with query, body."""
    digest = hashlib.sha256(method.encode("ascii"))
    for part in (target, body):
        digest.update(b"\0" + len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def scoped(route: str, subject: str, key: str) -> str:
    """One user's key on one route; the client's key is hashed (it is theirs, any length)."""
    digest = hashlib.blake2b(f"{subject}\0{key}".encode(), digest_size=16).hexdigest()
    return f"{route}:{digest}"


def keepable(status: int) -> bool:
    """5xx and retry-asking answers are released, not kept: a retry runs the request again."""
    return status < 500 and status not in _RETRYABLE


def _pending(token: str, fingerprint: str) -> bytes:
    return f"p|{token}|{fingerprint}".encode("ascii")


def _owner(token: str) -> bytes:
    return f"p|{token}|".encode("ascii")


def _done(fingerprint: str, answer: StoredResponse) -> bytes:
    head = {
        "status": answer.status,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in answer.headers],
        "kept": answer.body is not None,
    }
    return (
        b"d|"
        + fingerprint.encode("ascii")
        + b"|"
        + json.dumps(head).encode()
        + b"\n"
        + (answer.body or b"")
    )


def _held(value: bytes) -> Held:
    state, _, rest = value.partition(b"|")
    if state == b"p":
        return Held(rest.partition(b"|")[2].decode("ascii"), None)
    fingerprint, _, payload = rest.partition(b"|")
    head_line, _, body = payload.partition(b"\n")
    head = json.loads(head_line)
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in head["headers"]]
    answer = StoredResponse(int(head["status"]), headers, body if head["kept"] else None)
    return Held(fingerprint.decode("ascii"), answer)


class ResponseCapture:
    """A `send` that passes the response on and keeps a copy of it. The copy is handed to
    `keep` before the last message goes out: once a client has the whole answer, a repeat
    finds it kept. A response cut short never reaches its last message, so is not kept."""

    def __init__(
        self, send: Send, cap: int, keep: Callable[[StoredResponse | None], Awaitable[bool]]
    ):
        self._send = send
        self._cap = cap
        self._keep = keep
        self.status: int | None = None
        self.headers: Headers = []
        self.body = bytearray()
        self.overflow = False
        self.kept = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(n, v) for n, v in message.get("headers", []) if n != b"x-request-id"]
        elif message["type"] == "http.response.body":
            if not self.overflow:
                self.body += message.get("body", b"")
                if len(self.body) > self._cap:
                    self.overflow = True
                    self.body.clear()
            if not message.get("more_body", False):
                self.kept = await self._keep(self._answer())
        await self._send(message)

    def _answer(self) -> StoredResponse | None:
        """The answer to keep, or None (not to be kept: to be retried)."""
        if self.status is None or not keepable(self.status):
            return None
        return StoredResponse(
            self.status, self.headers, None if self.overflow else bytes(self.body)
        )


async def replay(answer: StoredResponse, send: Send, request_id: str) -> int:
    assert answer.body is not None
    headers = [
        *answer.headers,
        (b"idempotent-replayed", b"true"),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
    return len(answer.body)


def replayed_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the already-read body, then the client's own messages."""
    delivered = False

    async def receive_again() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


# -- adapters -----------------------------------------------------------------------------


class MemoryIdempotency:
    """One replica's keys, with expiry on the injected clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}
        self._sweep_at = 1024

    def _get(self, key: str) -> bytes | None:
        entry = unexpired(self._values, key, _deadline, self.clock())
        return None if entry is None else entry[0]

    async def claim(self, key: str, fingerprint: str, token: str, lock: float) -> Held | None:
        value = self._get(key)
        if value is not None:
            return _held(value)
        if len(self._values) >= self._sweep_at:
            now = self.clock()
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
            self._sweep_at = max(1024, 2 * len(self._values))
        self._values[key] = (_pending(token, fingerprint), self.clock() + lock)
        return None

    async def complete(
        self, key: str, token: str, fingerprint: str, answer: StoredResponse, ttl: float
    ) -> bool:
        value = self._get(key)
        if value is None or not value.startswith(_owner(token)):
            return False
        self._values[key] = (_done(fingerprint, answer), self.clock() + ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        value = self._get(key)
        if value is not None and value.startswith(_owner(token)):
            del self._values[key]


# KEYS[1]: the key; ARGV[1]: the owner's prefix; ARGV[2]: the new value (empty: delete);
# ARGV[3]: its lifetime in ms
_IF_OWNER_LUA = """
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""


class RedisIdempotency:
    """Keys shared by every replica; expiry is Redis's own (PX)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self._if_owner = store.client.register_script(_IF_OWNER_LUA)

    async def claim(self, key: str, fingerprint: str, token: str, lock: float) -> Held | None:
        name = self.store.key("idem", key)
        value = _pending(token, fingerprint)
        previous = await self.store.run(
            "idempotency",
            lambda client: client.set(name, value, nx=True, px=_ms(lock), get=True),
        )
        return _held(previous) if isinstance(previous, bytes) else None

    async def complete(
        self, key: str, token: str, fingerprint: str, answer: StoredResponse, ttl: float
    ) -> bool:
        done = _done(fingerprint, answer)
        return await self._if_owner_sets(key, token, done, _ms(ttl))

    async def release(self, key: str, token: str) -> None:
        await self._if_owner_sets(key, token, b"", 0)

    async def _if_owner_sets(self, key: str, token: str, value: bytes, ms: int) -> bool:
        name = self.store.key("idem", key)
        args = (_owner(token), value, ms)
        changed: int = await self.store.run(
            "idempotency",
            lambda client: self._if_owner(keys=[name], args=args, client=client),
        )
        return bool(changed)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _deadline(entry: tuple[bytes, float]) -> float:
    return entry[1]
