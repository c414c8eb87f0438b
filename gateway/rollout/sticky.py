"""Who a request is, for a sticky split: the token's user, else a cookie, else the client IP.

- A verified JWT `sub` is the key when there is one: the user sees one upstream for a
  route on every device.
- Otherwise the gateway's cookie (`strangler_sticky` by default). Its value is a MAC of
  the client IP, 128 bits of keyed BLAKE2b in hex (keyed BLAKE2 is a MAC, RFC 7693; it
  costs half of HMAC-SHA256, and a first visit pays it on the request path). It is stable
  (the first request, assigned by IP before the cookie exists, lands where the later ones
  with the cookie do, and the cookie keeps the user in place when their address changes),
  unguessable without the secret, and it does not reveal the address. It is not identity:
  it never becomes X-User-Id, never reaches the policy, and choosing your own value only
  chooses which backend answers you, as clearing cookies would.
- Clients that drop cookies are assigned by their address (the peer, or the nearest
  untrusted address in X-Forwarded-For when the peer is a trusted proxy), which is what
  the cookie would have said.

The cookie is set only on answers from split routes to callers without a token or a valid
cookie: HttpOnly, SameSite=Lax, Path=/, a Max-Age, and Secure on https.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from gateway.config.rollout import StickySettings

Headers = list[tuple[bytes, bytes]]

_VALUE = re.compile(rb"[0-9a-f]{32}")  # 16 bytes in hex


def key(
    settings: StickySettings,
    sub: str | None,
    headers: Headers,
    peer: str | None,
    scheme: str,
    trusted: Callable[[str | None], bool],
) -> tuple[bytes, bytes | None]:
    """The request's sticky key, and the Set-Cookie value to send when one is due.

    `trusted` says whether an address is one of the table's trusted proxies."""
    if sub:
        return b"sub:" + sub.encode(), None
    value = cookie_value(headers, settings.prefix)
    if value is not None:
        return b"c:" + value, None
    value = value_for(settings.secret, client_address(peer, headers, trusted))
    secure = is_secure(scheme, headers, trusted(peer))
    return b"c:" + value, set_cookie(settings, value, secure)


def value_for(secret: bytes, client: str) -> bytes:
    # BLAKE2b takes keys of up to 64 bytes; longer secrets are hashed down to that first
    key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
    return hashlib.blake2b(client.encode(), digest_size=16, key=key).hexdigest().encode()


def cookie_value(headers: Headers, prefix: bytes) -> bytes | None:
    """The well-formed value of the cookie `prefix` ("name=") names (RFC 6265 5.4)."""
    for header, value in headers:
        if header != b"cookie":
            continue
        for pair in value.split(b";"):
            pair = pair.strip()
            if pair.startswith(prefix):
                candidate = pair[len(prefix) :].strip(b'"')
                return candidate if _VALUE.fullmatch(candidate) else None
    return None


def set_cookie(settings: StickySettings, value: bytes, secure: bool) -> bytes:
    attributes = f"; Path=/; Max-Age={settings.max_age}; HttpOnly; SameSite=Lax"
    return settings.prefix + value + (attributes + "; Secure" * secure).encode()


def client_address(
    peer: str | None, headers: Headers, trusted: Callable[[str | None], bool]
) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest untrusted hop
    in X-Forwarded-For (the leftmost entries are the client's to write, so never those)."""
    if peer is None:
        return "unknown"
    if not trusted(peer):
        return peer
    hops = [
        hop.strip().decode("latin-1")
        for name, value in headers
        if name == b"x-forwarded-for"
        for hop in value.split(b",")
    ]
    for hop in reversed(hops):
        if hop and not trusted(hop):
            return hop
    return peer


def is_secure(scheme: str, headers: Headers, trusted: bool) -> bool:
    """https to the client: the connection's scheme, or a trusted proxy's X-Forwarded-Proto."""
    if scheme == "https":
        return True
    if not trusted:
        return False
    protos = [v for name, v in headers if name == b"x-forwarded-proto"]
    return bool(protos) and protos[0].split(b",")[0].strip().lower() == b"https"
