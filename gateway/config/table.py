"""`routes.yaml`, the migration map, parsed into immutable, validated data.

The file is read from PyYAML's node tree rather than from plain Python objects, so every
error names the line it is about, and validation collects all errors instead of stopping at
the first (YARP's config validator does the same). A table is swapped whole on reload.

Shape (documented with examples in the README)::

    upstreams:
      legacy: {url: http://127.0.0.1:8001, timeout: 5s, pool: 100}
      search: {url: http://127.0.0.1:8002, timeout: 2s}
    default: legacy          # unmatched paths go here; omit it to answer 404
    max_body: 10MiB          # largest request body accepted (413 above it)
    trusted_proxies: []      # peers whose X-Forwarded-*/Forwarded headers are kept
    routes:
      - name: search
        path: /search        # prefix match on a segment boundary
        methods: [GET]       # optional; GET implies HEAD
        upstream: search
        rewrite: /v2/search  # optional: replace the matched prefix (strip_prefix: true = "/")
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from common.validation import (
    ConfigIssue,
    NodeReader,
    compose,
    line_of,
    parse_duration,
    parse_size,
    positive_int,
    read,
)
from gateway.config import resilience as resilience_config
from gateway.config.access import AUTH_MODES, AuthSettings, AuthzSettings, read_auth, read_authz
from gateway.config.cdc import CdcSettings, read_cdc
from gateway.config.consistency import ConsistencySettings, read_consistency
from gateway.config.edge import EdgeSettings, read_edge
from gateway.config.limits import RouteLimits, StoreSettings, read_route_limits, read_shared_store
from gateway.config.metrics import MetricsSettings, read_metrics
from gateway.config.paths import configured
from gateway.config.resilience import RouteResilience, Shedding, UpstreamResilience, read_shedding
from gateway.config.rollout import RolloutSettings, RouteRollout, read_settings, read_upstream
from gateway.config.rollout import read_route as read_rollout
from gateway.config.shadow import (
    ShadowSettings,
    ShadowStoreSettings,
    ShadowWorkerSettings,
    read_shadow,
    read_store,
    read_worker,
)
from gateway.config.websocket import WebSocketSettings, read_websocket

DEFAULT_TIMEOUT = 30.0
HOST_CLIENT, HOST_UPSTREAM = "client", "upstream"  # an upstream's `host:` modes
_HOST_VALUE = re.compile(r"(?:[A-Za-z0-9\-._~]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_POOL = 100
DEFAULT_MAX_BODY = 10 * 1024 * 1024

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


@dataclass(frozen=True, slots=True)
class RouteTable:
    upstreams: dict[str, Upstream]
    routes: tuple[Route, ...]
    default: str | None
    max_body: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    auth: AuthSettings
    authz: AuthzSettings | None  # None: `authz: none`, no policy check
    shadow_store: ShadowStoreSettings
    source: str
    version: str  # sha256 of the file's bytes, first 12 hex digits
    loaded_at: float = field(default_factory=time.time)
    store: StoreSettings = field(default_factory=StoreSettings)  # rate limits, idempotency, jtis
    shadow_worker: ShadowWorkerSettings = field(default_factory=ShadowWorkerSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)  # monolith, sticky cookie
    metrics: MetricsSettings = field(default_factory=MetricsSettings)  # GET /metrics
    cdc: CdcSettings | None = None  # where the CDC bridge's status is read (the dashboard)
    shedding: Shedding = field(default_factory=Shedding)  # the gateway's in-flight limit
    # the CDC-fed upstreams whose reads a writer is kept from (gateway/rollout/consistency.py)
    read_your_writes: ConsistencySettings | None = None
    edge: EdgeSettings = field(default_factory=EdgeSettings)  # what a client may hold
    # prefix -> routes with that prefix, in file order; built once, read on every request
    _by_prefix: dict[str, tuple[Route, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Route]] = {}
        for route in self.routes:
            grouped.setdefault(route.path, []).append(route)
        self._by_prefix.update({k: tuple(v) for k, v in grouped.items()})

    def match(self, path: str, method: str) -> Route | None:
        """Longest prefix on a segment boundary whose method filter admits `method`."""
        by_prefix = self._by_prefix
        candidate = path
        while True:
            for route in by_prefix.get(candidate or "/", ()):
                if route.allows(method):
                    return route
            if not candidate:
                return None
            candidate = candidate[: candidate.rfind("/")]

    def is_trusted(self, peer: str | None) -> bool:
        if not self.trusted_proxies or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def auth_mode(self, route: Route | None) -> str:
        return route.auth if route is not None and route.auth else self.auth.default

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "loaded_at": self.loaded_at,
            "default": self.default,
            "max_body": self.max_body,
            "auth": {"default": self.auth.default, "keys": [k.id for k in self.auth.keys]},
            "authz": self.authz.engine if self.authz else "none",
            "upstreams": {
                u.name: {"url": u.url, "timeout": u.timeout, "pool": u.pool}
                for u in self.upstreams.values()
            },
            "routes": [
                {
                    "name": r.name,
                    "path": r.path,
                    "methods": sorted(r.methods) if r.methods else None,
                    "upstream": r.upstream,
                    "rewrite": r.rewrite,
                    "auth": self.auth_mode(r),
                    "authz_failure": r.authz_failure,
                    "state": r.rollout.state,
                    "weights": dict(r.rollout.weights) or {r.upstream: 100},
                }
                for r in self.routes
            ],
        }


def load(path: str | Path) -> RouteTable:
    """Read and validate a routes file; raise ConfigError listing every problem."""
    return parse(read(path), str(path))


def parse(data: bytes, source: str = "<routes>") -> RouteTable:
    root = compose(data, source)
    validator = _Validator(Path(source).parent)
    table = validator.table(root, source, hashlib.sha256(data).hexdigest()[:12])
    validator.raise_if_any(source)
    assert table is not None
    return table


class _Validator(NodeReader):
    """Walks the node tree once, recording every problem with its line."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base  # relative file names are relative to the routes file
        self.declared: set[str] = set()  # upstream names, valid or not
        self.rollout = RolloutSettings()

    def table(self, root: Node | None, source: str, version: str) -> RouteTable | None:
        if root is None:
            self.issues.append(ConfigIssue(1, "the file is empty"))
            return None
        top = self.mapping(
            root,
            "routes file",
            {
                "upstreams",
                "default",
                "routes",
                "max_body",
                "trusted_proxies",
                "auth",
                "authz",
                "shadow_store",
                "store",
                "shadow_worker",
                "rollout",
                "metrics",
                "cdc",
                "load_shedding",
                "read_your_writes",
                "edge",
            },
        )
        if top is None:
            return None
        auth = read_auth(self, top["auth"], self.base) if "auth" in top else None
        if "auth" not in top:
            self.error(root, "missing 'auth' (write auth: {default: none} to serve without tokens)")
        authz = read_authz(self, top["authz"], self.base) if "authz" in top else None
        if "authz" not in top:
            self.error(root, "missing 'authz' (write authz: none to serve without a policy)")
        upstreams: dict[str, Upstream] = {}
        if "upstreams" not in top:
            self.error(root, "missing 'upstreams'")
        else:
            upstreams = self.upstreams(top["upstreams"])
        default = None
        if "default" in top:
            default = self.scalar(top["default"], "default")
            if default is not None and default not in self.declared:
                self.error(top["default"], f"default: unknown upstream {default!r}")
        self.rollout = read_settings(self, top.get("rollout"), default, self.declared)
        max_body = DEFAULT_MAX_BODY
        if "max_body" in top:
            max_body = self.converted(top["max_body"], "max_body", parse_size) or max_body
        trusted = self.networks(top["trusted_proxies"]) if "trusted_proxies" in top else ()
        routes: tuple[Route, ...] = ()
        if "routes" in top:
            routes = self.routes(top["routes"], upstreams)
        store = read_store(self, top["shadow_store"]) if "shadow_store" in top else None
        shared = read_shared_store(self, top["store"]) if "store" in top else StoreSettings()
        worker = read_worker(self, top["shadow_worker"]) if "shadow_worker" in top else None
        metrics = read_metrics(self, top.get("metrics"), {r.path: (r.name, r.line) for r in routes})
        cdc = read_cdc(self, top["cdc"], self.base) if "cdc" in top else None
        shedding = read_shedding(self, top["load_shedding"]) if "load_shedding" in top else None
        consistency = None
        if "read_your_writes" in top:
            consistency = read_consistency(
                self, top["read_your_writes"], self.declared, self.rollout.monolith
            )
        edge = read_edge(self, top["edge"]) if "edge" in top else EdgeSettings()
        if auth is None:
            return None
        return RouteTable(
            upstreams,
            routes,
            default,
            max_body,
            trusted,
            auth,
            authz,
            store or ShadowStoreSettings(),
            source,
            version,
            store=shared,
            shadow_worker=worker or ShadowWorkerSettings(),
            rollout=self.rollout,
            metrics=metrics,
            cdc=cdc,
            shedding=shedding or Shedding(),
            read_your_writes=consistency,
            edge=edge,
        )

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
        fields = self.mapping(
            node,
            what,
            {"url", "timeout", "connect_timeout", "pool", "ca", "client_cert", "client_key", "host"}
            | resilience_config.UPSTREAM_KEYS,
        )
        if fields is None:
            return None
        tls = {
            key: self.converted(fields[key], f"{what}: {key}", self.readable_file)
            for key in ("ca", "client_cert", "client_key")
            if key in fields
        }
        if ("client_cert" in fields) != ("client_key" in fields):
            self.error(node, f"{what}: client_cert and client_key go together")
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

    def readable_file(self, name: str) -> str:
        path = self.base / name
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a readable file")
        return str(path)

    def networks(self, node: Node) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        if not isinstance(node, SequenceNode):
            self.error(node, "trusted_proxies must be a list of addresses or CIDR ranges")
            return ()
        result = []
        for item in node.value:
            network = self.converted(item, "trusted_proxies", _network)
            if network is not None:
                result.append(network)
        return tuple(result)

    def routes(self, node: Node, upstreams: dict[str, Upstream]) -> tuple[Route, ...]:
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
            route = self.route(item, upstreams)
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

    def route(self, node: Node, upstreams: dict[str, Upstream]) -> Route | None:
        fields = self.mapping(
            node,
            "route",
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
            | resilience_config.ROUTE_KEYS,
        )
        if fields is None:
            return None
        for required in ("name", "path", "upstream"):
            if required not in fields:
                self.error(node, f"route: missing {required!r}")
        name = self.scalar(fields["name"], "route name") if "name" in fields else None
        what = f"route {name!r}" if name else "route"
        if name is not None and not _NAME.match(name):
            self.error(fields["name"], f"{what}: name must match {_NAME.pattern}")
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
        auth = (
            self.choice(fields["auth"], f"{what}: auth", AUTH_MODES) if "auth" in fields else None
        )
        failure = "closed"
        if "authz_failure" in fields:
            failure = (
                self.choice(fields["authz_failure"], f"{what}: authz_failure", ("closed", "open"))
                or failure
            )
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


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address or CIDR range") from exc
