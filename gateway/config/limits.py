"""The shared-store sections of routes.yaml: `store:` at the top, `rate_limit:` and
`idempotency:` on a route.

store:                          # where rate limits, idempotency keys and revoked tokens live
  backend: redis                # memory (default: one replica, one worker) | redis (shared by all)
  url: redis://127.0.0.1:6379/0 # or url_env: NAME (a URL with a password, from the environment)
  timeout: 100ms                # connect and every command; a slower answer is a failure
  cooldown: 1s                  # after a failure, the store is left alone this long
  prefix: "strangler:"          # every key starts with it
  failure: {rate_limit: open, idempotency: closed, revocation: closed}   # the defaults
routes:
  - name: orders
    path: /orders
    upstream: legacy
    rate_limit:
      limit: 100                # requests per window ...
      window: 1m                # ... refilled continuously (token bucket) or counted per window
      algorithm: token_bucket   # token_bucket | sliding_window
      key: user                 # user | ip | header:X-API-Key (anonymous: the client's IP)
      failure: open             # this route's policy when the store fails
    idempotency:
      ttl: 24h                  # how long an answer is kept for replays
      lock: 1m                  # how long an unfinished first request holds its key
      max_response: 1MiB        # larger answers are not kept (a repeat gets 409)
      methods: [POST, PATCH]    # default: POST, PUT, PATCH, DELETE
      required: false           # true: an unsafe request without a key gets 400
      failure: closed
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from yaml.nodes import Node

from common.validation import (
    NodeReader,
    parse_duration,
    parse_size,
    positive_duration,
    positive_int,
)

FAILURE_MODES = ("open", "closed")
BACKENDS = ("memory", "redis")
ALGORITHMS = ("token_bucket", "sliding_window")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_MAX_RESPONSE = 1024 * 1024
# Counters are requests x microseconds, integers that Redis's Lua (doubles) holds exactly.
_EXACT = 2**53
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What each feature does while the store is unreachable (issue 7's defaults)."""

    rate_limit: str = "open"  # a limiter outage must not become a gateway outage
    idempotency: str = "closed"  # running a write twice is worse than refusing it
    revocation: str = "closed"  # a revoked token must never pass


@dataclass(frozen=True, slots=True)
class StoreSettings:
    backend: str = "memory"
    url: str | None = None
    timeout: float = 0.1
    cooldown: float = 1.0
    prefix: str = "strangler:"
    failure: FailurePolicy = FailurePolicy()

    @property
    def endpoint(self) -> tuple[str, str | None, float, float, str]:
        """What names one store: a reload that changes only `failure` keeps the connection
        and the in-memory counters."""
        return self.backend, self.url, self.timeout, self.cooldown, self.prefix


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    limit: int
    window: int  # whole seconds
    algorithm: str = "token_bucket"
    key: str = "ip"  # user | ip | header
    header: bytes = b""  # lower-case header name for key: header:NAME
    failure: str | None = None  # None: the store's default
    window_us: int = field(init=False, repr=False)  # what the counters count in

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_us", self.window * 1_000_000)


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    ttl: float = 86400.0
    lock: float = 60.0
    max_response: int = DEFAULT_MAX_RESPONSE
    methods: frozenset[str] = UNSAFE_METHODS
    required: bool = False
    failure: str | None = None  # None: the store's default


@dataclass(frozen=True, slots=True)
class RouteLimits:
    rate_limit: RateLimitSettings | None = None
    idempotency: IdempotencySettings | None = None


def read_shared_store(reader: NodeReader, node: Node) -> StoreSettings:
    fields = reader.mapping(
        node, "store", {"backend", "url", "url_env", "timeout", "cooldown", "prefix", "failure"}
    )
    if fields is None:
        return StoreSettings()
    backend = "memory"
    if "backend" in fields:
        backend = reader.choice(fields["backend"], "store: backend", BACKENDS) or backend
    url = None
    sources = [key for key in ("url", "url_env") if key in fields]
    if len(sources) > 1:
        reader.error(node, "store: give either url or url_env")
    elif sources and backend != "redis":
        reader.error(fields[sources[0]], f"store: {sources[0]} is for backend: redis")
    elif sources == ["url"]:
        url = reader.converted(fields["url"], "store: url", _redis_url)
    elif sources == ["url_env"]:
        # a URL with a password stays out of the routes file (a ConfigMap, a repository)
        name = reader.scalar(fields["url_env"], "store: url_env") or ""
        if name not in os.environ:
            reader.error(fields["url_env"], f"store: environment variable {name!r} is not set")
        else:
            url = reader.converted(
                fields["url_env"], f"store: ${name}", lambda _: _redis_url(os.environ[name])
            )
    elif backend == "redis":
        reader.error(node, "store: backend redis needs a url (redis://host:port/db) or url_env")
    failure = FailurePolicy()
    if "failure" in fields:
        failure = _failure_policy(reader, fields["failure"])
    return StoreSettings(
        backend=backend,
        url=url,
        timeout=reader.optional(fields, "timeout", "store", positive_duration, 0.1),
        cooldown=reader.optional(fields, "cooldown", "store", parse_duration, 1.0),
        prefix=reader.optional(fields, "prefix", "store", str, "strangler:"),
        failure=failure,
    )


def _failure_policy(reader: NodeReader, node: Node) -> FailurePolicy:
    what = "store: failure"
    fields = reader.mapping(node, what, {"rate_limit", "idempotency", "revocation"})
    if fields is None:
        return FailurePolicy()
    defaults = FailurePolicy()
    modes = {
        key: reader.choice(fields[key], f"{what}: {key}", FAILURE_MODES) or getattr(defaults, key)
        for key in fields
    }
    return FailurePolicy(**modes)


def read_route_limits(reader: NodeReader, fields: dict[str, Node], what: str) -> RouteLimits | None:
    """A route's rate_limit and idempotency blocks; None when it has neither."""
    if "rate_limit" not in fields and "idempotency" not in fields:
        return None
    rate = _rate_limit(reader, fields["rate_limit"], what) if "rate_limit" in fields else None
    keys = _idempotency(reader, fields["idempotency"], what) if "idempotency" in fields else None
    return RouteLimits(rate, keys) if rate is not None or keys is not None else None


def _rate_limit(reader: NodeReader, node: Node, route: str) -> RateLimitSettings | None:
    what = f"{route}: rate_limit"
    fields = reader.mapping(node, what, {"limit", "window", "algorithm", "key", "failure"})
    if fields is None:
        return None
    for required in ("limit", "window"):
        if required not in fields:
            reader.error(node, f"{what}: missing {required!r}")
    limit = reader.optional(fields, "limit", what, positive_int, None)
    window = reader.optional(fields, "window", what, _whole_seconds, None)
    algorithm = "token_bucket"
    if "algorithm" in fields:
        algorithm = (
            reader.choice(fields["algorithm"], f"{what}: algorithm", ALGORITHMS) or algorithm
        )
    key, header = "ip", b""
    if "key" in fields:
        parsed = reader.converted(fields["key"], f"{what}: key", _key)
        if parsed is not None:
            key, header = parsed
    failure = _failure(reader, fields, what)
    if limit is None or window is None:
        return None
    if (2 * limit + 1) * window * 1_000_000 > _EXACT:
        reader.error(node, f"{what}: limit x window is too large to count exactly")
        return None
    return RateLimitSettings(limit, window, algorithm, key, header, failure)


def _idempotency(reader: NodeReader, node: Node, route: str) -> IdempotencySettings | None:
    what = f"{route}: idempotency"
    fields = reader.mapping(
        node, what, {"ttl", "lock", "max_response", "methods", "required", "failure"}
    )
    if fields is None:
        return None
    methods = UNSAFE_METHODS
    if "methods" in fields:
        chosen = set()
        for item in reader.sequence(fields["methods"], f"{what}: methods"):
            method = reader.scalar(item, f"{what}: method")
            if method is not None and method.upper() not in UNSAFE_METHODS:
                reader.error(item, f"{what}: {method!r} is not an unsafe method (POST, PUT, ...)")
            elif method is not None:
                chosen.add(method.upper())
        methods = frozenset(chosen) or methods
    required = False
    if "required" in fields:
        required = (
            reader.choice(fields["required"], f"{what}: required", ("true", "false")) == "true"
        )
    return IdempotencySettings(
        ttl=reader.optional(fields, "ttl", what, positive_duration, 86400.0),
        lock=reader.optional(fields, "lock", what, positive_duration, 60.0),
        max_response=reader.optional(
            fields, "max_response", what, parse_size, DEFAULT_MAX_RESPONSE
        ),
        methods=methods,
        required=required,
        failure=_failure(reader, fields, what),
    )


def _failure(reader: NodeReader, fields: dict[str, Node], what: str) -> str | None:
    if "failure" not in fields:
        return None
    return reader.choice(fields["failure"], f"{what}: failure", FAILURE_MODES)


def _key(text: str) -> tuple[str, bytes]:
    if text in ("user", "ip"):
        return text, b""
    kind, _, name = text.partition(":")
    if kind == "header" and _HEADER_NAME.match(name):
        return "header", name.lower().encode("ascii")
    raise ValueError(f"{text!r} must be user, ip or header:NAME (e.g. header:X-API-Key)")


def _whole_seconds(text: str) -> int:
    # RateLimit-Policy's w is whole seconds (draft-ietf-httpapi-ratelimit-headers-11 3.1.3)
    seconds = parse_duration(text)
    if seconds < 1 or not math.isclose(seconds, round(seconds)):
        raise ValueError(f"{text!r} must be a whole number of seconds, at least 1s")
    return round(seconds)


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{redacted(text)!r} must be a redis://, rediss:// or unix:// URL")
    return text


def redacted(url: str) -> str:
    """The URL as logs and `routes check` show it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
