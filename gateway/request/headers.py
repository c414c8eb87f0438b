"""Header rules for the hop from client to upstream and back. Pure functions, no I/O.

- Hop-by-hop headers (RFC 9110 7.6.1) are removed in both directions, together with every
  header the `Connection` header names, before the gateway adds its own.
- `X-Forwarded-For/-Proto/-Host` and `Forwarded` (RFC 7239) are set by the gateway. What a
  client sent is kept (and appended to) only when the peer is a trusted proxy.
- Identity (`X-User-*`), gateway (`X-Strangler-*`) and other `X-Forwarded-*` headers from
  clients (`X-Forwarded-User`, ...) never reach an upstream: only the gateway sets them.
- `Host`: the client's, first in the list; the upstream client replaces it with the
  upstream's own, or a fixed value, where the upstream says `host: upstream` or `host: NAME`
  (gateway/config/routes.py). The client's host also travels in `X-Forwarded-Host`.
- Framing is the gateway's: `Content-Length` and `Transfer-Encoding` from a client are never
  forwarded; the upstream client writes the framing of the body it actually sends. A
  `Connection` header that names a framing, routing or identity header (`protected`) gets
  the request rejected with 400 at the edge (gateway/http/server.py): a hop-by-hop nomination must
  never change what the gateway decided on (the request smuggling of CVE-2022-31813).
- Upstream responses lose every `X-Strangler-*` header: only the gateway sets those.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from gateway.config.routes import Route, Upstream
from gateway.identity.tokens import Identity

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Set by the gateway alone; whatever a client sent under these names is dropped.
_GATEWAY_OWNED = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-request-id",
    }
)
# ... and whatever else claims to come from a proxy: X-Forwarded-User, -Prefix, -Port.
_OWNED_PREFIXES = (b"x-user-", b"x-strangler-", b"x-forwarded-")
# Framed by the gateway's client, never copied from the client's request.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_NOT_FORWARDED = HOP_BY_HOP | _FRAMING
# What a Connection header may not name: framing, routing and identity.
_PROTECTED = _GATEWAY_OWNED | _FRAMING | {b"authorization", b"cookie"}
# What a monolith that knows its commit position says after a write
# (gateway/rollout/consistency.py).
COMMIT_POSITION = b"x-strangler-commit-position"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


def _dropped(always: frozenset[bytes], headers: Headers) -> frozenset[bytes]:
    """`always` and what a Connection header names (a new set only when it names any:
    most messages have none, and this runs on every request and response)."""
    tokens = _connection_tokens(headers)
    return always | tokens if tokens else always


def protected_nomination(headers: Headers) -> bytes | None:
    """The first framing, routing or identity header that a Connection header names."""
    for token in _connection_tokens(headers):
        if token in _PROTECTED or token.startswith(_OWNED_PREFIXES):
            return token
    return None


def request_id(headers: Headers) -> str:
    """The client's X-Request-ID when it is well-formed, else a new random one."""
    for name, value in headers:
        if name == b"x-request-id" and _REQUEST_ID.match(value):
            return value.decode("ascii")
    # Unique, not secret: a PRNG avoids a getrandom() syscall per request.
    return f"{random.getrandbits(128):032x}"


def upstream_request_headers(
    headers: Headers,
    *,
    peer: str | None,
    scheme: str,
    trusted: bool,
    request_id: str,
    identity: Identity | None = None,
) -> Headers:
    """The headers sent upstream: the client's Host first (when it sent one), then the rest.

    A bearer token is the gateway's to consume and is not passed on (as Envoy's jwt_authn
    does by default); upstreams get the verified identity as X-User-Id and X-User-Roles.
    """
    dropped = _dropped(_NOT_FORWARDED, headers)
    out: Headers = []
    prior: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in _GATEWAY_OWNED:
            prior.setdefault(name, []).append(value)
        elif name in dropped or name == b"expect" or name.startswith(_OWNED_PREFIXES):
            # Expect: 100-continue is answered by the gateway's server on the first read
            continue
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            continue
        else:
            out.append((name, value))
    host = b", ".join(prior.get(b"host", ()))
    client = (peer or "unknown").encode("ascii")
    forwarded_for = client
    proto, public_host = scheme.encode("ascii"), host
    forwarded = _forwarded_element(client, proto, host)
    if trusted:
        if b"x-forwarded-for" in prior:
            forwarded_for = b", ".join([*prior[b"x-forwarded-for"], client])
        proto = b", ".join(prior.get(b"x-forwarded-proto", [])) or proto
        public_host = b", ".join(prior.get(b"x-forwarded-host", [])) or public_host
        if b"forwarded" in prior:
            forwarded = b", ".join([*prior[b"forwarded"], forwarded])
    out += [
        (b"x-forwarded-for", forwarded_for),
        (b"x-forwarded-proto", proto),
        (b"forwarded", forwarded),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    if public_host:
        out.append((b"x-forwarded-host", public_host))
    if identity is not None:
        out.append((b"x-user-id", identity.sub.encode("ascii")))
        out.append((b"x-user-roles", ",".join(identity.roles).encode("ascii")))
    if b"host" in prior:  # one, as the edge makes sure
        out.insert(0, (b"host", prior[b"host"][0]))
    return out


def _forwarded_element(client: bytes, scheme: bytes, host: bytes) -> bytes:
    node = b'"[' + client + b']"' if b":" in client else client  # RFC 7239 6: IPv6 quoted
    element = b"for=" + node + b";proto=" + scheme
    if host:
        escaped = host.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        element += b';host="' + escaped + b'"'
    return element


def response_headers(
    raw: Headers,
    *,
    upstream: Upstream,
    route: Route | None,
    public_origin: Callable[[], str],  # called only for a Location header
    request_id: str,
) -> tuple[Headers, bytes | None]:
    """Upstream response headers as sent to the client, and the upstream's commit position
    (`X-Strangler-Commit-Position`, read-your-writes' signal; never sent on)."""
    dropped = _dropped(HOP_BY_HOP, raw)
    out: Headers = []
    position = None
    for name, value in raw:
        lowered = name.lower()
        if lowered.startswith(b"x-strangler-"):
            if lowered == COMMIT_POSITION:
                position = value
            continue
        if lowered in dropped or lowered == b"x-request-id":
            continue
        if lowered == b"location":
            value = rewrite_location(value, upstream, route, public_origin())
        out.append((lowered, value))
    out.append((b"x-request-id", request_id.encode("ascii")))
    out.append((b"x-strangler-upstream", upstream.name.encode("ascii")))
    return out, position


def rewrite_location(
    value: bytes, upstream: Upstream, route: Route | None, public_origin: str
) -> bytes:
    """Point a redirect at the gateway when it points at the upstream's own origin.

    The path is mapped back through the route's rewrite so that following the redirect
    through the gateway reaches the same upstream resource.
    """
    text = value.decode("latin-1")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return value
        if (parts.scheme, (parts.hostname or "").lower(), port) != upstream.origin:
            return value
        text = public_origin + text[len(f"{parts.scheme}://{parts.netloc}") :]
        path_start = len(public_origin)
    elif text.startswith("/"):
        path_start = 0
    else:
        return value  # relative reference: resolves against the gateway's URL already
    if route is not None and route.rewrite is not None:
        text = text[:path_start] + _unrewrite(text[path_start:], route)
    return text.encode("latin-1")


def _unrewrite(reference: str, route: Route) -> str:
    assert route.rewrite is not None
    cut = len(reference.split("?", 1)[0].split("#", 1)[0])
    path, tail = reference[:cut], reference[cut:]
    target = route.rewrite.rstrip("/")
    if target and not (path == target or path.startswith(target + "/")):
        return reference
    rest = path[len(target) :]
    prefix = "" if route.path == "/" else route.path
    return (prefix + rest or "/") + tail
