"""The compare-rules language of a route's `shadow: compare:` block: JSON paths and rules.

JSON paths (a subset of RFC 9535): `$`, `.name` (letters, digits, `_`, `-`), `["any key"]`,
`[n]`, and the wildcards `.*` / `[*]` (any member or element). `ignore` and `unordered` paths
cover their whole subtree; a learned noisy path covers a difference at exactly that path.
The differ (gateway/shadow/differ.py) applies the rules; the shadow store redacts by path.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

NORMALISERS = frozenset({"timestamps", "uuids"})
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a member written `.name`; any other is `["..."]`


class Wildcard(enum.Enum):
    ANY = "*"


Step = str | int | Wildcard  # a member name, an array index, or any child
JsonPath = tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class CompareRules:
    ignore: tuple[str, ...] = ()
    unordered: tuple[str, ...] = ()
    numeric_tolerance: float = 0.0
    headers: tuple[str, ...] = ("content-type",)
    normalise: tuple[str, ...] = ()  # of NORMALISERS
    noisy: frozenset[str] = frozenset()  # learned: JSON paths, "status", "body", "headers.<name>"
    max_differences: int = 100  # per comparison, noisy ones included

    def __post_init__(self) -> None:
        for name in ("ignore", "unordered"):
            for path in getattr(self, name):
                parse_path(path)
        for path in self.noisy:
            if path.startswith("$"):
                parse_path(path)
        unknown = sorted(set(self.normalise) - NORMALISERS)
        if unknown:
            known = ", ".join(sorted(NORMALISERS))
            raise ValueError(f"unknown normaliser {unknown[0]!r} (known: {known})")
        if not self.numeric_tolerance >= 0:
            raise ValueError("numeric_tolerance must be a number >= 0")
        if self.max_differences < 1:
            raise ValueError("max_differences must be at least 1")


def parse_path(text: str) -> JsonPath:
    """Parse a JSON path of the supported subset; ValueError says what is wrong and where."""
    if not text.startswith("$"):
        raise ValueError(f"JSON path {text!r} must start with '$'")
    steps: list[Step] = []
    i = 1
    while i < len(text):
        if text.startswith(".*", i):
            steps.append(Wildcard.ANY)
            i += 2
        elif text[i] == ".":
            match = NAME.match(text, i + 1)
            if match is None:
                raise ValueError(f"JSON path {text!r}: expected a name after '.' at {i}")
            steps.append(match.group())
            i = match.end()
        elif text.startswith("[*]", i):
            steps.append(Wildcard.ANY)
            i += 3
        elif text.startswith('["', i):
            try:
                key, end = json.JSONDecoder().raw_decode(text, i + 1)
            except ValueError:
                raise ValueError(f"JSON path {text!r}: bad quoted name at {i}") from None
            if not text.startswith("]", end):
                raise ValueError(f"JSON path {text!r}: expected ']' at {end}")
            steps.append(key)
            i = end + 1
        elif text[i] == "[":
            end = text.find("]", i)
            digits = text[i + 1 : end] if end > 0 else ""
            if not digits.isdigit() or not digits.isascii():
                raise ValueError(f'JSON path {text!r}: expected [n], [*] or ["name"] at {i}')
            steps.append(int(digits))
            i = end + 1
        else:
            raise ValueError(f"JSON path {text!r}: unexpected {text[i]!r} at {i}")
    return tuple(steps)


def format_path(steps: JsonPath) -> str:
    out = ["$"]
    for step in steps:
        if isinstance(step, Wildcard):
            out.append("[*]")
        elif isinstance(step, int):
            out.append(f"[{step}]")
        elif NAME.fullmatch(step):
            out.append(f".{step}")
        else:
            out.append(f"[{json.dumps(step)}]")
    return "".join(out)
