"""The `shadow:` block of a route, and the top-level `shadow_store:`, in routes.yaml.

routes:
  - name: search
    path: /search
    upstream: legacy
    shadow:
      upstream: search        # the candidate
      sample: 0.25            # share of requests mirrored; deterministic per request id
      methods: [GET, HEAD]    # default: safe methods only
      writes: false           # unsafe methods are mirrored only with writes: true
      max_body: 1MiB          # larger request bodies are not mirrored (counted)
      response_cap: 1MiB      # larger primary answers compare status and headers only
      timeout: 2s             # the candidate's own timeout
      compare:
        ignore: [$.took_ms]
        unordered: [$.results]
        numeric_tolerance: 0.0001
        headers: [content-type]
        normalise: [timestamps, uuids]
      noise: auto             # learn noisy fields by asking the primary twice
      redact: [$.email]       # replaced before anything is stored
shadow_store: {url: "sqlite:///var/shadow.db", retain: 100000, max_age: 7d}
shadow_worker: {mode: process, concurrency: 64, buffer: 4MiB, nice: 19, idle: true, busy_limit: 80%}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yaml.nodes import Node

from common.validation import (
    NodeReader,
    non_negative_int,
    parse_duration,
    parse_share,
    parse_size,
    positive_int,
)
from gateway.config.compare import NORMALISERS, CompareRules, parse_path

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_CAP = 1024 * 1024
DEFAULT_STORE = "sqlite:///var/shadow.db"
WORKER_MODES = ("process", "inline")


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    upstream: str
    sample: float = 1.0
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    max_body: int = DEFAULT_CAP
    response_cap: int = DEFAULT_CAP
    timeout: float = 2.0
    compare: CompareRules = field(default_factory=CompareRules)
    noise: bool = False
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ShadowStoreSettings:
    url: str = DEFAULT_STORE
    retain: int = 100_000
    max_age: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class ShadowWorkerSettings:
    """Where the comparisons run: `process`, a worker process fed copies over a socket pair
    (the gateway's loop only appends a frame per copy), or `inline`, in the gateway's own
    event loop (one process; every comparison then costs the requests around it)."""

    mode: str = "process"  # one of WORKER_MODES
    concurrency: int = 64  # comparisons in flight; further copies are dropped and counted
    buffer: int = 4 * 1024 * 1024  # copies not yet taken by the worker; beyond: dropped
    nice: int = 19  # the worker's CPU priority below the gateway's (0-19): only spare CPU
    idle: bool = True  # and Linux's SCHED_IDLE class: nice alone is relative to its session
    # above this share of wall time busy (gateway.shadow.budget), the gateway mirrors fewer
    # copies; 1 (100%) turns that off
    busy_limit: float = 0.8


def read_shadow(
    reader: NodeReader, node: Node, what: str, declared: set[str]
) -> ShadowSettings | None:
    where = f"{what}: shadow"
    fields = reader.mapping(
        node,
        where,
        {
            "upstream",
            "sample",
            "methods",
            "writes",
            "max_body",
            "response_cap",
            "timeout",
            "compare",
            "noise",
            "redact",
        },
    )
    if fields is None:
        return None
    upstream = None
    if "upstream" not in fields:
        reader.error(node, f"{where}: missing 'upstream' (the candidate)")
    else:
        upstream = reader.scalar(fields["upstream"], f"{where}: upstream")
        if upstream is not None and upstream not in declared:
            reader.error(fields["upstream"], f"{where}: unknown upstream {upstream!r}")
    methods = _methods(reader, fields, where)
    noise = False
    if "noise" in fields:
        noise = reader.choice(fields["noise"], f"{where}: noise", ("auto", "off")) == "auto"
    compare = _compare(reader, fields["compare"], where) if "compare" in fields else None
    redact = _paths(reader, fields, "redact", where)
    if upstream is None:
        return None
    return ShadowSettings(
        upstream=upstream,
        sample=reader.optional(fields, "sample", where, parse_share, 1.0),
        methods=methods,
        max_body=reader.optional(fields, "max_body", where, parse_size, DEFAULT_CAP),
        response_cap=reader.optional(fields, "response_cap", where, parse_size, DEFAULT_CAP),
        timeout=reader.optional(fields, "timeout", where, parse_duration, 2.0),
        compare=compare or CompareRules(),
        noise=noise,
        redact=redact,
    )


def _methods(reader: NodeReader, fields: dict[str, Node], where: str) -> frozenset[str]:
    """The methods mirrored: safe ones unless `writes: true` allows the others."""
    writes = False
    if "writes" in fields:
        writes = reader.choice(fields["writes"], f"{where}: writes", ("true", "false")) == "true"
    if "methods" not in fields:
        return frozenset({"GET", "HEAD"})
    methods = frozenset(m.upper() for m in _scalars(reader, fields["methods"], f"{where}: methods"))
    unsafe = sorted(methods - SAFE_METHODS)
    if unsafe and not writes:
        reader.error(
            fields["methods"],
            f"{where}: {', '.join(unsafe)} change data; mirroring them needs writes: true",
        )
    return methods


def _scalars(reader: NodeReader, node: Node, what: str) -> list[str]:
    return [v for item in reader.sequence(node, what) if (v := reader.scalar(item, what))]


def _paths(reader: NodeReader, fields: dict[str, Node], key: str, what: str) -> tuple[str, ...]:
    if key not in fields:
        return ()
    result = []
    for item in reader.sequence(fields[key], f"{what}: {key}"):
        text = reader.scalar(item, f"{what}: {key}")
        if text is None:
            continue
        try:
            parse_path(text)
        except ValueError as exc:
            reader.error(item, f"{what}: {key}: {exc}")
            continue
        result.append(text)
    return tuple(result)


def _compare(reader: NodeReader, node: Node, where: str) -> CompareRules | None:
    what = f"{where}: compare"
    fields = reader.mapping(
        node, what, {"ignore", "unordered", "numeric_tolerance", "headers", "normalise"}
    )
    if fields is None:
        return None
    headers: tuple[str, ...] = ("content-type",)
    if "headers" in fields:
        headers = tuple(h.lower() for h in _scalars(reader, fields["headers"], f"{what}: headers"))
    normalise = []
    for item in (
        reader.sequence(fields["normalise"], f"{what}: normalise") if "normalise" in fields else []
    ):
        if (
            choice := reader.choice(item, f"{what}: normalise", tuple(sorted(NORMALISERS)))
        ) is not None:
            normalise.append(choice)
    return CompareRules(
        ignore=_paths(reader, fields, "ignore", what),
        unordered=_paths(reader, fields, "unordered", what),
        numeric_tolerance=reader.optional(fields, "numeric_tolerance", what, _tolerance, 0.0),
        headers=headers,
        normalise=tuple(normalise),
    )


def _tolerance(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"{text!r} must not be negative")
    return value


def read_store(reader: NodeReader, node: Node) -> ShadowStoreSettings:
    fields = reader.mapping(node, "shadow_store", {"url", "retain", "max_age"})
    if fields is None:
        return ShadowStoreSettings()
    url = DEFAULT_STORE
    if "url" in fields:
        url = reader.scalar(fields["url"], "shadow_store: url") or DEFAULT_STORE
        if not url.startswith(("sqlite:///", "postgresql")):
            reader.error(fields["url"], "shadow_store: url must be sqlite:///... or postgresql...")
    return ShadowStoreSettings(
        url=url,
        retain=reader.optional(fields, "retain", "shadow_store", positive_int, 100_000),
        max_age=reader.optional(fields, "max_age", "shadow_store", _age, 7 * 86400.0),
    )


def _age(text: str) -> float:
    return float(text[:-1]) * 86400 if text.endswith("d") else parse_duration(text)


def read_worker(reader: NodeReader, node: Node) -> ShadowWorkerSettings:
    fields = reader.mapping(
        node, "shadow_worker", {"mode", "concurrency", "buffer", "nice", "idle", "busy_limit"}
    )
    if fields is None:
        return ShadowWorkerSettings()
    mode = "process"
    if "mode" in fields:
        mode = reader.choice(fields["mode"], "shadow_worker: mode", WORKER_MODES) or mode
    idle = True
    if "idle" in fields:
        idle = reader.choice(fields["idle"], "shadow_worker: idle", ("true", "false")) == "true"
    return ShadowWorkerSettings(
        mode=mode,
        concurrency=reader.optional(fields, "concurrency", "shadow_worker", positive_int, 64),
        buffer=reader.optional(fields, "buffer", "shadow_worker", _buffer, 4 * 1024 * 1024),
        nice=reader.optional(fields, "nice", "shadow_worker", _nice, 19),
        idle=idle,
        busy_limit=reader.optional(fields, "busy_limit", "shadow_worker", parse_share, 0.8),
    )


def _buffer(text: str) -> int:
    size = parse_size(text)
    if size < 64 * 1024:
        raise ValueError(f"{text!r} is too small to hold a batch of copies (at least 64KiB)")
    return size


def _nice(text: str) -> int:
    value = non_negative_int(text)
    if value > 19:
        raise ValueError(f"{text!r} must be from 0 (the gateway's own priority) to 19")
    return value
