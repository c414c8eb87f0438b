"""The response differ: a primary's answer against a candidate's. Pure code, no I/O.

`diff(primary, candidate, rules)` compares the status, the chosen headers and the bodies.
JSON bodies (both content types `application/json` or `+json`, both parseable) are compared
structurally; anything else by equality and size. A truncated body (the gateway keeps a copy
up to a cap) is not compared at all: the verdict says `status_only`.

The rules and their JSON paths are gateway/config/compare.py's; gateway/shadow/rules.py
compiles them into the trie a walk through a body follows.

Normalisation, always on: header names are compared lower-case, media types without case or
spacing differences, numbers by value (`1`, `1.0` and `1e0` are equal; `numeric_tolerance`
is absolute). Opt-in (`normalise: [timestamps, uuids]`): ISO-8601 date-times (and HTTP dates)
and UUIDs compare equal to any other of their kind; the differences still show the originals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

from gateway.config.compare import NAME, CompareRules, Wildcard, format_path, parse_path
from gateway.shadow.rules import CompiledRules, RuleCursor, advance, compile_rules

Verdict = Literal["identical", "different", "status_only", "noise_only"]
VALUE_CHARS = 200  # rendered values are cut to this length
_MAX_UNORDERED_SEARCH = 16  # leftover elements matched pairwise beyond this are zipped

_NUMBERS = (int, float)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_ABSENT = object()
_TEXT_TYPES = ("application/xml", "application/javascript", "application/x-www-form-urlencoded")


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's response as the gateway holds it (header names lower-case)."""

    status: int
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes
    truncated: bool = False  # the body is a prefix of what was sent

    @property
    def content_type(self) -> str:
        """The media type, lower-case and without parameters; "" when absent."""
        for name, value in self.headers:
            if name.lower() == b"content-type":
                return value.decode("latin-1").split(";", 1)[0].strip().lower()
        return ""


@dataclass(frozen=True, slots=True)
class Difference:
    path: str  # "$.results[3].price", "status", "headers.content-type" or "body"
    kind: str  # status header value_changed missing_field extra_field type_changed
    #            array_length order_only body
    primary: str | None  # short JSON text (or a description for `body`); None when absent
    candidate: str | None


@dataclass(frozen=True, slots=True)
class Comparison:
    verdict: Verdict
    differences: tuple[Difference, ...]
    noisy: tuple[Difference, ...]  # differences on learned noisy paths, not counted
    body_compared: bool


def generalise(path: str) -> str:
    """`$.results[3].served_at` -> `$.results[*].served_at`; other paths unchanged."""
    if not path.startswith("$"):
        return path
    steps = parse_path(path)
    return format_path(tuple(Wildcard.ANY if isinstance(s, int) else s for s in steps))


def diff(primary: Answer, candidate: Answer, rules: CompareRules) -> Comparison:
    differ = _Differ(compile_rules(rules), rules)
    if primary.status != candidate.status:
        differ.add("status", "status", str(primary.status), str(candidate.status))
    for name in rules.headers:
        if _header(primary, name) != _header(candidate, name):
            ours, theirs = _raw_header(primary, name), _raw_header(candidate, name)
            differ.add(f"headers.{name.lower()}", "header", _cut(ours), _cut(theirs))
    body_compared = not (primary.truncated or candidate.truncated)
    if body_compared and primary.body != candidate.body:
        differ.bodies(primary, candidate)
    counted = tuple(differ.counted[: rules.max_differences])
    noisy = tuple(differ.noisy[: rules.max_differences - len(counted)])
    verdict: Verdict
    if counted:
        verdict = "different"
    elif not body_compared:
        verdict = "status_only"
    else:
        verdict = "noise_only" if noisy else "identical"
    return Comparison(verdict, counted, noisy, body_compared)


def noisy_paths(first: Answer, second: Answer, rules: CompareRules) -> frozenset[str]:
    """The paths that differ between two answers of the same primary, indices generalised."""
    comparison = diff(first, second, replace(rules, noisy=frozenset()))
    return frozenset(generalise(d.path) for d in comparison.differences)


def render(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


# --- headers -------------------------------------------------------------------------------


def _raw_header(answer: Answer, name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    values = [v.decode("latin-1").strip() for n, v in answer.headers if n.lower() == wanted]
    # RFC 9110 5.3: repeated fields are one comma-separated list.
    return ", ".join(values) if values else None


def _header(answer: Answer, name: str) -> str | None:
    value = _raw_header(answer, name)
    return _media_type(value) if value is not None and name.lower() == "content-type" else value


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:VALUE_CHARS]


def _media_type(value: str) -> str:
    """`Application/JSON; Charset="UTF-8"` -> `application/json;charset=utf-8` (RFC 9110 8.3.1)."""
    kind, *raw = value.split(";")
    params = []
    for param in raw:
        name, _, val = param.strip().partition("=")
        name, val = name.strip().lower(), val.strip().strip('"')
        params.append(f"{name}={val.lower() if name == 'charset' else val}")
    return ";".join([kind.strip().lower(), *sorted(params)])


# --- bodies --------------------------------------------------------------------------------


def _member(key: str) -> str:
    """A key's step in a JSON path; keys from upstream bodies are cached only when short, so
    the cache stays bounded in bytes (4096 x 64 characters, twice)."""
    return _cached_member(key) if len(key) <= 64 else _member_path(key)


def _member_path(key: str) -> str:
    return f".{key}" if NAME.fullmatch(key) else f"[{json.dumps(key)}]"


_cached_member = lru_cache(maxsize=4096)(_member_path)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type.endswith("+xml")
        or content_type in _TEXT_TYPES
        or _is_json(content_type)
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def _parse(body: bytes) -> tuple[bool, object]:
    try:
        return True, json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False, None


class _Differ:
    def __init__(self, compiled: CompiledRules, rules: CompareRules) -> None:
        self.compiled = compiled
        self.tolerance = rules.numeric_tolerance
        self.counted: list[Difference] = []
        self.noisy: list[Difference] = []

    def add(self, path: str, kind: str, primary: str | None, candidate: str | None) -> None:
        noisy = path in self.compiled.literal_noise
        (self.noisy if noisy else self.counted).append(Difference(path, kind, primary, candidate))

    def scratch(self) -> _Differ:
        other = _Differ.__new__(_Differ)
        other.compiled, other.tolerance, other.counted, other.noisy = (
            self.compiled,
            self.tolerance,
            [],
            [],
        )
        return other

    def merge(self, other: _Differ) -> None:
        self.counted += other.counted
        self.noisy += other.noisy

    def bodies(self, primary: Answer, candidate: Answer) -> None:
        if _is_json(primary.content_type) and _is_json(candidate.content_type):
            (ok_a, a), (ok_b, b) = _parse(primary.body), _parse(candidate.body)
            if ok_a and ok_b:
                if any(node.ignore for node in self.compiled.root):  # `ignore: [$]`
                    return
                scratch = self.scratch()
                try:
                    scratch.value(a, b, "$", self.compiled.root)
                except RecursionError:  # nested deeper than a walk can go: bytes decide
                    pass
                else:
                    self.merge(scratch)
                    return
        self.raw(primary, candidate)

    def raw(self, primary: Answer, candidate: Answer) -> None:
        a, b = primary.body, candidate.body
        if not (_is_text(primary.content_type) and _is_text(candidate.content_type)):
            self.add("body", "body", f"{len(a)} bytes", f"{len(b)} bytes")
            return
        text_a, text_b = a.decode("utf-8", "replace"), b.decode("utf-8", "replace")
        for pattern, placeholder in self.compiled.normalisers:
            text_a, text_b = pattern.sub(placeholder, text_a), pattern.sub(placeholder, text_b)
        if text_a == text_b:
            return
        at = next((i for i, (x, y) in enumerate(zip(text_a, text_b, strict=False)) if x != y), None)
        at = min(len(text_a), len(text_b)) if at is None else at
        start = max(0, at - 20)
        self.add(
            "body",
            "body",
            f"{len(a)} bytes, from char {start}: {render(text_a[start : start + 80])}",
            f"{len(b)} bytes, from char {start}: {render(text_b[start : start + 80])}",
        )

    def report(self, state: RuleCursor, path: str, kind: str, a: str | None, b: str | None) -> None:
        noisy = any(node.noisy for node in state)
        (self.noisy if noisy else self.counted).append(Difference(path, kind, a, b))

    def value(self, a: object, b: object, path: str, state: RuleCursor) -> None:
        # json.loads makes exact types (bool is not int here), so type() is the JSON kind.
        kind_a, kind_b = type(a), type(b)
        if kind_a is not kind_b and not (kind_a in _NUMBERS and kind_b in _NUMBERS):
            self.report(state, path, "type_changed", render(a), render(b))
        elif isinstance(a, dict) and isinstance(b, dict):
            self.members(a, b, path, state)
        elif isinstance(a, list) and isinstance(b, list):
            if any(node.unordered for node in state):
                self.unordered(a, b, path, state)
            else:
                self.elements(a, b, path, state)
        elif a != b and not self.same_scalar(a, b):
            self.report(state, path, "value_changed", render(a), render(b))

    def same_scalar(self, a: object, b: object) -> bool:
        if isinstance(a, str) and isinstance(b, str):
            return bool(self.compiled.normalisers) and self.text(a) == self.text(b)
        if isinstance(a, int | float) and isinstance(b, int | float) and self.tolerance:
            return abs(a - b) <= self.tolerance
        return False

    def text(self, value: str) -> str:
        for pattern, placeholder in self.compiled.normalisers:
            if pattern.fullmatch(value):
                return placeholder
        return value

    def members(
        self, a: dict[str, object], b: dict[str, object], path: str, state: RuleCursor
    ) -> None:
        missing = 0
        for key, x in a.items():
            y = b.get(key, _ABSENT)
            if type(x) is type(y) and type(x) in _SCALARS and x == y:
                continue  # the common case, decided without building a path
            child = advance(state, key)
            if child and any(node.ignore for node in child):
                continue
            if y is _ABSENT:
                missing += 1
                self.report(child, path + _member(key), "missing_field", render(x), None)
            else:
                self.value(x, y, path + _member(key), child)
        if len(b) > len(a) - missing:
            for key, y in b.items():
                if key in a:
                    continue
                child = advance(state, key)
                if not any(node.ignore for node in child):
                    self.report(child, path + _member(key), "extra_field", None, render(y))

    def elements(self, a: list[object], b: list[object], path: str, state: RuleCursor) -> None:
        if len(a) != len(b):
            self.report(state, path, "array_length", str(len(a)), str(len(b)))
        scratch = self.scratch()
        differing: list[int] = []
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if type(x) is type(y) and type(x) in _SCALARS and x == y:
                continue
            child = advance(state, i)
            if child and any(node.ignore for node in child):
                continue
            before = len(scratch.counted)
            scratch.value(x, y, f"{path}[{i}]", child)
            if len(scratch.counted) > before:
                differing.append(i)
        # Elements equal in place pair up; the rest is a reordering when it is one multiset.
        if len(differing) > 1 and len(a) == len(b):
            as_set = self.scratch()
            if as_set.multiset(a, b, path, state, differing, differing):
                self.report(state, path, "order_only", None, None)
                self.noisy += as_set.noisy
                return
        self.merge(scratch)

    def multiset(
        self,
        a: list[object],
        b: list[object],
        path: str,
        state: RuleCursor,
        in_a: Sequence[int],
        in_b: Sequence[int],
    ) -> bool:
        """Pair the elements `in_a` with those `in_b` as multisets; True if all found a pair."""
        unmatched: dict[str, list[int]] = {}
        for j in in_b:
            unmatched.setdefault(self.canonical(b[j], advance(state, j)), []).append(j)
        left_a: list[int] = []
        for i in in_a:
            bucket = unmatched.get(self.canonical(a[i], advance(state, i)))
            if bucket:
                j = bucket.pop(0)
                if self.compiled.has_noise and a[i] != b[j]:  # only noisy parts can differ
                    self.value(a[i], b[j], f"{path}[{i}]", advance(state, i))
            else:
                left_a.append(i)
        left_b = sorted(j for bucket in unmatched.values() for j in bucket)
        if len(left_a) <= _MAX_UNORDERED_SEARCH:  # pair within tolerance, first fit
            for i in list(left_a):
                for j in left_b:
                    trial = self.scratch()
                    trial.value(a[i], b[j], f"{path}[{i}]", advance(state, i))
                    if not trial.counted:
                        self.merge(trial)
                        left_a.remove(i)
                        left_b.remove(j)
                        break
        for i, j in zip(left_a, left_b, strict=False):
            self.value(a[i], b[j], f"{path}[{i}]", advance(state, i))
        return not left_a and not left_b

    def unordered(self, a: list[object], b: list[object], path: str, state: RuleCursor) -> None:
        if len(a) != len(b):
            self.report(state, path, "array_length", str(len(a)), str(len(b)))
        self.multiset(a, b, path, state, range(len(a)), range(len(b)))

    def canonical(self, value: object, state: RuleCursor) -> str:
        """A key equal for values equal under the rules, tolerance aside (and `1` vs `1.0`
        outside rules: such pairs are then matched by the pairwise search)."""
        if not state and not self.compiled.normalisers:
            return json.dumps(value, sort_keys=True)  # the C encoder: no rule applies below
        if isinstance(value, str):
            return repr(self.text(value))
        if isinstance(value, dict):
            parts = []
            for key, item in sorted(value.items()):
                child = advance(state, key)
                if not (child and any(node.ignore or node.noisy for node in child)):
                    parts.append(f"{key!r}:{self.canonical(item, child)}")
            return "{" + ",".join(parts) + "}"
        if isinstance(value, list):
            items = [self.canonical(x, advance(state, i)) for i, x in enumerate(value)]
            if any(node.unordered for node in state):
                items.sort()
            return "[" + ",".join(items) + "]"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return repr(value)  # numbers, True, False, None: unlike any quoted string
