"""The `upstreams:` and `routes:` sections of routes.yaml: where requests go, and how.

    upstreams:
      legacy: {url: http://127.0.0.1:8001, timeout: 5s, pool: 100}
      search: {url: https://search.internal, ca: certs/ca.pem, host: upstream}
    routes:
      - name: search
        path: /search        # prefix match on a segment boundary
        methods: [GET]       # optional; GET implies HEAD
        upstream: search
        rewrite: /v2/search  # optional: replace the matched prefix (strip_prefix: true = "/")

A route's feature blocks are read by their sections' modules (`shadow:` by
gateway.config.shadow, `rate_limit:` and `idempotency:` by gateway.config.limits, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common.validation import NodeReader, line_of, parse_duration, parse_size, positive_int
from gateway.config import resilience as resilience_config
from gateway.config.access import AUTH_MODES
from gateway.config.limits import RouteLimits, read_route_limits
from gateway.config.paths import configured
from gateway.config.resilience import RouteResilience, UpstreamResilience
from gateway.config.rollout import RolloutSettings, RouteRollout, read_upstream
from gateway.config.rollout import read_route as read_rollout
from gateway.config.shadow import ShadowSettings, read_shadow
from gateway.config.websocket import WebSocketSettings, read_websocket

DEFAULT_TIMEOUT = 30.0
HOST_CLIENT, HOST_UPSTREAM = "client", "upstream"  # an upstream's `host:` modes
_HOST_VALUE = re.compile(r"(?:[A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_POOL = 100

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UPSTREAM_KEYS = (
    frozenset(
        {"url", "timeout", "connect_timeout", "pool", "ca", "client_cert", "client_key", "host"}
    )
    | resilience_config.UPSTREAM_KEYS
)
_ROUTE_KEYS = (
    frozenset(
        {
            "name",
            "path",
            "methods",
            "upstream",
            "rewrite",
            "strip_prefix",
            "max_body",
            "auth",
            "authz_failure",
            "shadow",
            "rate_limit",
            "idempotency",
            "state",
            "promote",
            "websocket",
        }
    )
    | resilience_config.ROUTE_KEYS
)

NO_ROUTE = "(none)"  # served by the default upstream, by the gateway itself, or rejected


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    url: str  # scheme://host[:port], no path
    timeout: float = DEFAULT_TIMEOUT  # connect and between reads (time to first byte included)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    pool: int = DEFAULT_POOL  # max connections kept to this upstream
    ca: str | None = None  # https: verify the upstream against this CA bundle
    client_cert: str | None = None  # https: present this certificate (mTLS) ...
    client_key: str | None = None  # ... with this key
    resilience: UpstreamResilience = field(default_factory=UpstreamResilience)
    # The Host the upstream gets: the client's (HOST_CLIENT, the default: the application
    # builds URLs and checks CSRF origins with the public name), its own URL's
    # (HOST_UPSTREAM, for services behind virtual hosting), or this fixed value.
    host: str = HOST_CLIENT
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Pools and resilience state are looked up by the whole upstream on every request,
        # and a frozen dataclass rehashes every field (nested ones too) on each lookup.
        key = tuple(getattr(self, f.name) for f in fields(self) if f.compare)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    @property
    def origin(self) -> tuple[str, str, int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str  # normalised, no trailing slash except "/"
    upstream: str
    methods: frozenset[str] | None = None  # None: any method
    rewrite: str | None = None  # replaces the matched prefix when forwarding
    max_body: int | None = None
    auth: str | None = None  # required | optional | none; None: the table's default
    authz_failure: str = "closed"  # open: let requests through when the policy engine fails
    shadow: ShadowSettings | None = None  # mirror to a candidate and compare the answers
    line: int = 0
    limits: RouteLimits | None = None  # rate_limit and idempotency (gateway.config.limits)
    # state, weighted targets (then `upstream` is the largest share), promotion gate
    rollout: RouteRollout = field(default_factory=RouteRollout)
    resilience: RouteResilience = field(default_factory=RouteResilience)
    websocket: WebSocketSettings | None = None  # proxies WebSocket upgrades (websocket_config)

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def forward_path(self, path: str) -> str:
        """The path sent upstream: the normalised request path, prefix rewritten if asked."""
        if self.rewrite is None:
            return path
        rest = path[len(self.path) :] if self.path != "/" else path
        joined = self.rewrite.rstrip("/") + rest
        return joined if joined.startswith("/") else "/" + joined


class RouteReader(NodeReader):
    """Reads `upstreams:` and `routes:`; gateway.config.table's reader adds the other keys."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base  # relative file names are relative to the routes file
        # Upstream names, valid or not: a route naming a broken upstream is not wrong too.
        self.declared: set[str] = set()
        self.rollout = RolloutSettings()  # the monolith routes are staged against

    def upstreams(self, node: Node) -> dict[str, Upstream]:
        entries = self.mapping(node, "upstreams", None)
        result: dict[str, Upstream] = {}
        for name, value in (entries or {}).items():
            self.declared.add(name)
            if not _NAME.match(name):
                self.error(value, f"upstream name {name!r} must match {_NAME.pattern}")
            upstream = self.upstream(name, value)
            if upstream is not None:
                result[name] = upstream
        if entries is not None and not entries:
            self.error(node, "upstreams: define at least one upstream")
        return result

    def upstream(self, name: str, node: Node) -> Upstream | None:
        what = f"upstream {name!r}"
        fields = self.mapping(node, what, set(_UPSTREAM_KEYS))
        if fields is None:
            return None
        tls = self.tls(node, fields, what)
        url = None
        if "url" not in fields:
            self.error(node, f"{what}: missing 'url'")
        else:
            url = self.converted(fields["url"], f"{what}: url", _upstream_url)
        timeout = self.optional(fields, "timeout", what, parse_duration, DEFAULT_TIMEOUT)
        connect = self.optional(
            fields, "connect_timeout", what, parse_duration, DEFAULT_CONNECT_TIMEOUT
        )
        pool = self.optional(fields, "pool", what, positive_int, DEFAULT_POOL)
        host = self.optional(fields, "host", what, _host_mode, HOST_CLIENT)
        resilience = resilience_config.read_upstream(self, fields, what)
        if url is None:
            return None
        if tls and not url.startswith("https://"):
            self.error(node, f"{what}: ca, client_cert and client_key need an https:// url")
        return Upstream(
            name,
            url,
            timeout,
            connect,
            pool,
            tls.get("ca"),
            tls.get("client_cert"),
            tls.get("client_key"),
            resilience,
            host,
        )

    def tls(self, node: Node, fields: dict[str, Node], what: str) -> dict[str, str | None]:
        """The upstream's `ca`, `client_cert` and `client_key` files, those given."""
        tls: dict[str, str | None] = {
            key: self.converted(fields[key], f"{what}: {key}", self.readable_file)
            for key in ("ca", "client_cert", "client_key")
            if key in fields
        }
        if ("client_cert" in fields) != ("client_key" in fields):
            self.error(node, f"{what}: client_cert and client_key go together")
        return tls

    def readable_file(self, name: str) -> str:
        path = self.base / name
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file")
        return str(path)

    def routes(self, node: Node) -> tuple[Route, ...]:
        if not isinstance(node, SequenceNode):
            self.error(node, "routes must be a list")
            return ()
        result: list[Route] = []
        names: dict[str, int] = {}
        for item in node.value:
            name = _scalar_field(item, "name")
            if name is not None and name in names:
                self.error(item, f"duplicate route name {name!r} (first on line {names[name]})")
            elif name is not None:
                names[name] = line_of(item)
            route = self.route(item)
            if route is None:
                continue
            for other in result:
                if other.path == route.path and _methods_overlap(other.methods, route.methods):
                    self.error(
                        item,
                        f"route {route.name!r} overlaps route {other.name!r} (line {other.line}):"
                        f" same path {route.path!r} and overlapping methods",
                    )
            result.append(route)
        return tuple(result)

    def route(self, node: Node) -> Route | None:
        fields = self.mapping(node, "route", set(_ROUTE_KEYS))
        if fields is None:
            return None
        for required in ("name", "path", "upstream"):
            if required not in fields:
                self.error(node, f"route: missing {required!r}")
        name = self.route_name(fields)
        what = f"route {name!r}" if name else "route"
        path = None
        if "path" in fields:
            path = self.converted(fields["path"], f"{what}: path", _route_path)
        upstream, weights = None, None
        if "upstream" in fields:
            monolith = self.rollout.monolith
            upstream, weights = read_upstream(
                self, fields["upstream"], what, self.declared, monolith
            )
        methods = self.methods(fields["methods"], what) if "methods" in fields else None
        rewrite = self.rewrite(fields, what)
        max_body = self.optional(fields, "max_body", what, parse_size, None)
        auth, failure = self.route_access(fields, what)
        shadow = None
        if "shadow" in fields:
            shadow = read_shadow(self, fields["shadow"], what, self.declared)
        limits = read_route_limits(self, fields, what)
        resilience = resilience_config.read_route(self, fields, what)
        websocket = (
            read_websocket(self, fields["websocket"], what) if "websocket" in fields else None
        )
        if name is None or path is None or upstream is None:
            return None
        rollout = read_rollout(
            self, fields, what, upstream, weights, shadow, self.rollout.monolith, name
        )
        return Route(
            name,
            path,
            upstream,
            methods,
            rewrite,
            max_body,
            auth,
            failure,
            shadow,
            line_of(node),
            limits=limits,
            rollout=rollout,
            resilience=resilience,
            websocket=websocket,
        )

    def route_name(self, fields: dict[str, Node]) -> str | None:
        name = self.scalar(fields["name"], "route name") if "name" in fields else None
        if name is not None and not _NAME.match(name):
            what = f"route {name!r}" if name else "route"
            self.error(fields["name"], f"{what}: name must match {_NAME.pattern}")
        return name

    def route_access(self, fields: dict[str, Node], what: str) -> tuple[str | None, str]:
        """The route's `auth` mode (None: the table's default) and `authz_failure`."""
        auth = None
        if "auth" in fields:
            auth = self.choice(fields["auth"], f"{what}: auth", AUTH_MODES)
        failure = "closed"
        if "authz_failure" in fields:
            failure = (
                self.choice(fields["authz_failure"], f"{what}: authz_failure", ("closed", "open"))
                or failure
            )
        return auth, failure

    def methods(self, node: Node, what: str) -> frozenset[str] | None:
        if not isinstance(node, SequenceNode) or not node.value:
            self.error(node, f"{what}: methods must be a non-empty list")
            return None
        result: set[str] = set()
        for item in node.value:
            method = self.scalar(item, f"{what}: method")
            if method is None:
                continue
            if method.upper() not in HTTP_METHODS:
                self.error(item, f"{what}: unknown method {method!r}")
            result.add(method.upper())
        if "GET" in result:
            result.add("HEAD")  # a GET route answers HEAD too (RFC 9110 9.3.2)
        return frozenset(result)

    def rewrite(self, fields: dict[str, Node], what: str) -> str | None:
        if "rewrite" in fields and "strip_prefix" in fields:
            self.error(fields["strip_prefix"], f"{what}: use either 'rewrite' or 'strip_prefix'")
            return None
        if "strip_prefix" in fields:
            flag = self.scalar(fields["strip_prefix"], f"{what}: strip_prefix")
            if flag not in ("true", "false"):
                self.error(fields["strip_prefix"], f"{what}: strip_prefix must be true or false")
                return None
            return "/" if flag == "true" else None
        if "rewrite" in fields:
            result: str | None = self.converted(fields["rewrite"], f"{what}: rewrite", _route_path)
            return result
        return None


def _scalar_field(node: Node, key: str) -> str | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key and isinstance(value_node, ScalarNode):
                return str(value_node.value)
    return None


def _methods_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)


def _host_mode(text: str) -> str:
    if text in (HOST_CLIENT, HOST_UPSTREAM) or _HOST_VALUE.fullmatch(text):
        return text
    raise ValueError(f"{text!r} is not client, upstream or a host name (with an optional port)")


def _upstream_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: give only scheme://host[:port] (use 'rewrite' for paths)")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from exc
    netloc = parts.hostname if port is None else f"{parts.netloc.rsplit(':', 1)[0]}:{port}"
    return f"{parts.scheme}://{netloc}"


def _route_path(text: str) -> str:
    return configured(text).rstrip("/") or "/"
