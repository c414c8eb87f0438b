"""`routes.yaml`, the migration map, parsed into immutable, validated data.

The file is read from PyYAML's node tree rather than from plain Python objects, so every
error names the line it is about, and validation collects all errors instead of stopping at
the first (YARP's config validator does the same). A table is swapped whole on reload.

The top level (every key, with examples: docs/routes.md)::

    upstreams: ...           # gateway.config.routes
    default: legacy          # unmatched paths go here; omit it to answer 404
    max_body: 10MiB          # largest request body accepted (413 above it)
    trusted_proxies: []      # peers whose X-Forwarded-*/Forwarded headers are kept
    routes: ...              # gateway.config.routes

This module reads the top level; `upstreams:` and `routes:` are gateway.config.routes's, and
every other section has its own module in gateway.config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from yaml.nodes import Node, SequenceNode

from common.validation import ConfigError, ConfigIssue, compose, parse_size, read
from gateway.config.access import AuthSettings, AuthzSettings, read_auth, read_authz
from gateway.config.cdc import CdcSettings, read_cdc
from gateway.config.consistency import ConsistencySettings, read_consistency
from gateway.config.edge import EdgeSettings, read_edge
from gateway.config.limits import StoreSettings, read_shared_store, redacted
from gateway.config.metrics import MetricsSettings, read_metrics
from gateway.config.resilience import Shedding, read_shedding
from gateway.config.rollout import RolloutSettings, read_settings
from gateway.config.routes import Route, RouteReader, Upstream
from gateway.config.shadow import ShadowStoreSettings, ShadowWorkerSettings, read_store, read_worker

DEFAULT_MAX_BODY = 10 * 1024 * 1024
_TOP_KEYS = frozenset(
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
    }
)


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


def require_shared_store(table: RouteTable, workers: int) -> None:
    """Refuse a table whose shared state would split across `workers` processes.

    `store: {backend: memory}` keeps rate limits, idempotency keys and read-your-writes'
    pins inside one process: with several workers each would keep its own, so a limit would
    be N limits, a replayed key could run twice, and a write's pin would not hold on the
    worker that serves the next read. Such a table is a ConfigError naming the fix, at start
    and on reload (a rejected reload keeps the last good table)."""
    if workers <= 1 or table.store.backend != "memory":
        return
    users = [
        f"{what} on route {route.name!r}"
        for route in table.routes
        if route.limits is not None
        for what, used in (
            ("rate_limit", route.limits.rate_limit),
            ("idempotency", route.limits.idempotency),
        )
        if used is not None
    ]
    if table.read_your_writes is not None:
        users.append("read_your_writes (its pins)")
    if users:
        message = (
            f"store: memory keeps {', '.join(users)} inside each of the {workers} workers, "
            "which would then keep separate counts; use store: {backend: redis, url: ...} "
            "(or serve with --workers 1)"
        )
        raise ConfigError(table.source, [ConfigIssue(0, message)])


def limits_summary(table: RouteTable) -> tuple[list[str], list[str]]:
    """For `strangler routes check`: (lines, warnings) about the store and the routes' limits.

    Here rather than in gateway.config.limits: it reads the whole table, which imports that."""
    store, lines, warnings = table.store, [], []
    for route in table.routes:
        if route.limits is None:
            continue
        failure = store.failure
        rule, keys = route.limits.rate_limit, route.limits.idempotency
        if rule is not None:
            by = f"header {rule.header.decode()}" if rule.key == "header" else rule.key
            lines.append(
                f"rate limit: {route.name} {rule.limit} per {rule.window}s, {rule.algorithm},"
                f" by {by} (store down: {rule.failure or failure.rate_limit})"
            )
            if rule.key == "user" and table.auth_mode(route) == "none":
                warnings.append(
                    f"warning: route {route.name!r} limits by user but takes no token "
                    "(auth: none): every request is counted by client IP"
                )
        if keys is not None:
            lines.append(
                f"idempotency: {route.name} {','.join(sorted(keys.methods))}, answers kept"
                f" {keys.ttl:g}s (store down: {keys.failure or failure.idempotency})"
            )
    if lines or store.backend != "memory":
        where = f"redis ({redacted(store.url or '')})" if store.url else "memory (one replica)"
        lines.insert(0, f"store: {where}")
    return lines, warnings


class _Sections(TypedDict):
    """The table's sections beyond routing, as `RouteTable` takes them."""

    shadow_store: ShadowStoreSettings
    store: StoreSettings
    shadow_worker: ShadowWorkerSettings
    metrics: MetricsSettings
    cdc: CdcSettings | None
    shedding: Shedding
    read_your_writes: ConsistencySettings | None
    edge: EdgeSettings


class _Validator(RouteReader):
    """Walks the node tree once, recording every problem with its line."""

    def table(self, root: Node | None, source: str, version: str) -> RouteTable | None:
        if root is None:
            self.issues.append(ConfigIssue(1, "the file is empty"))
            return None
        top = self.mapping(root, "routes file", set(_TOP_KEYS))
        if top is None:
            return None
        auth, authz = self.access(root, top)
        upstreams: dict[str, Upstream] = {}
        if "upstreams" not in top:
            self.error(root, "missing 'upstreams'")
        else:
            upstreams = self.upstreams(top["upstreams"])
        default = self.default(top)
        self.rollout = read_settings(self, top.get("rollout"), default, self.declared)
        max_body = DEFAULT_MAX_BODY
        if "max_body" in top:
            max_body = self.converted(top["max_body"], "max_body", parse_size) or max_body
        trusted = self.networks(top["trusted_proxies"]) if "trusted_proxies" in top else ()
        routes = self.routes(top["routes"]) if "routes" in top else ()
        sections = self.sections(top, routes)
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
            source=source,
            version=version,
            rollout=self.rollout,
            **sections,
        )

    def access(
        self, root: Node, top: dict[str, Node]
    ) -> tuple[AuthSettings | None, AuthzSettings | None]:
        auth = read_auth(self, top["auth"], self.base) if "auth" in top else None
        if "auth" not in top:
            self.error(root, "missing 'auth' (write auth: {default: none} to serve without tokens)")
        authz = read_authz(self, top["authz"], self.base) if "authz" in top else None
        if "authz" not in top:
            self.error(root, "missing 'authz' (write authz: none to serve without a policy)")
        return auth, authz

    def default(self, top: dict[str, Node]) -> str | None:
        """The upstream unmatched paths go to; None: they are answered 404."""
        if "default" not in top:
            return None
        default = self.scalar(top["default"], "default")
        if default is not None and default not in self.declared:
            self.error(top["default"], f"default: unknown upstream {default!r}")
        return default

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

    def sections(self, top: dict[str, Node], routes: tuple[Route, ...]) -> _Sections:
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
        return _Sections(
            shadow_store=store or ShadowStoreSettings(),
            store=shared,
            shadow_worker=worker or ShadowWorkerSettings(),
            metrics=metrics,
            cdc=cdc,
            shedding=shedding or Shedding(),
            read_your_writes=consistency,
            edge=edge,
        )


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address or CIDR range") from exc
