"""Redaction of shadow records before they are stored (pure): sensitive header values always,
configured JSON paths (and the values that contain them) when the caller asks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from gateway.config.compare import JsonPath, Wildcard, parse_path
from gateway.shadow.differ import Difference, render
from gateway.shadow.records import Record

SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
REDACTED = "[redacted]"


def redact(
    record: Record, paths: Sequence[str] = (), headers: frozenset[str] = SENSITIVE_HEADERS
) -> Record:
    """The record with sensitive header values and the values at `paths` (and inside
    values that contain them) replaced by "[redacted]"."""
    patterns = [parse_path(p) for p in paths]
    if not record.differences and not record.noisy:  # most records: nothing to redact
        return record
    return replace(
        record,
        differences=tuple(_redact(d, patterns, headers) for d in record.differences),
        noisy=tuple(_redact(d, patterns, headers) for d in record.noisy),
    )


def _redact(d: Difference, patterns: list[JsonPath], headers: frozenset[str]) -> Difference:
    if d.path.startswith("headers."):
        return _blank(d) if d.path.removeprefix("headers.") in headers else d
    if not patterns or not d.path.startswith("$"):
        return d
    steps = parse_path(d.path)
    if any(len(p) <= len(steps) and _matches(p, steps) for p in patterns):
        return _blank(d)
    below = [p[len(steps) :] for p in patterns if len(p) > len(steps) and _matches(p, steps)]
    if not below:
        return d
    return replace(
        d, primary=_mask_text(d.primary, below), candidate=_mask_text(d.candidate, below)
    )


def _matches(pattern: JsonPath, steps: JsonPath) -> bool:
    return all(p is Wildcard.ANY or p == s for p, s in zip(pattern, steps, strict=False))


def _blank(d: Difference) -> Difference:
    return replace(
        d,
        primary=None if d.primary is None else REDACTED,
        candidate=None if d.candidate is None else REDACTED,
    )


def _mask_text(text: str | None, patterns: list[JsonPath]) -> str | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:  # cut short when rendered: nothing in it can be shown safely
        return REDACTED
    masked = _mask(value, patterns)
    return text if masked == value else render(masked)


def _mask(value: object, patterns: list[JsonPath]) -> object:
    if () in patterns:
        return REDACTED
    if isinstance(value, dict):
        return {k: _mask(v, _descend(patterns, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, _descend(patterns, i)) for i, v in enumerate(value)]
    return value


def _descend(patterns: list[JsonPath], step: str | int) -> list[JsonPath]:
    return [p[1:] for p in patterns if p[0] is Wildcard.ANY or p[0] == step]
