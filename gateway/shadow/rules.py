"""The compare rules compiled for a walk through a JSON body (gateway/shadow/differ.py).

The rules' paths become one trie; a walk carries a cursor, the set of trie nodes the JSON
path so far matches (several, with wildcards), and asks it whether to ignore, compare as a
multiset, or count as noise. Below every rule the cursor is empty, which the walk checks
first: most of a body is compared without looking anything up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from gateway.config.compare import CompareRules, Step, Wildcard, parse_path

_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
    # or an HTTP date (RFC 9110 5.6.7)
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT",
    re.IGNORECASE,
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(slots=True)
class RuleNode:
    """One step of the rules' paths: what applies here, and the steps below."""

    keys: dict[str, RuleNode] = field(default_factory=dict)
    indices: dict[int, RuleNode] = field(default_factory=dict)
    any: RuleNode | None = None
    ignore: bool = False
    unordered: bool = False
    noisy: bool = False

    def child(self, step: Step) -> RuleNode:
        if isinstance(step, Wildcard):
            self.any = self.any or RuleNode()
            return self.any
        if isinstance(step, int):
            return self.indices.setdefault(step, RuleNode())
        return self.keys.setdefault(step, RuleNode())


RuleCursor = tuple[RuleNode, ...]


@dataclass(frozen=True, slots=True)
class CompiledRules:
    root: RuleCursor
    literal_noise: frozenset[str]  # "status", "body", "headers.<name>"
    has_noise: bool
    normalisers: tuple[tuple[re.Pattern[str], str], ...]  # pattern, placeholder


@lru_cache(maxsize=256)
def compile_rules(rules: CompareRules) -> CompiledRules:
    root = RuleNode()
    for flag, paths in (
        ("ignore", rules.ignore),
        ("unordered", rules.unordered),
        ("noisy", [p for p in rules.noisy if p.startswith("$")]),
    ):
        for path in paths:
            node = root
            for step in parse_path(path):
                node = node.child(step)
            setattr(node, flag, True)
    # NUL-delimited: no real value in a response is likely to equal a placeholder.
    patterns = {"timestamps": (_TIMESTAMP, "\0timestamp\0"), "uuids": (_UUID, "\0uuid\0")}
    return CompiledRules(
        root=(root,),
        literal_noise=frozenset(p for p in rules.noisy if not p.startswith("$")),
        has_noise=bool(rules.noisy),
        normalisers=tuple(patterns[name] for name in sorted(set(rules.normalise))),
    )


def advance(state: RuleCursor, key: str | int) -> RuleCursor:
    if not state:  # no rule below here: the usual case
        return state
    out: list[RuleNode] = []
    for node in state:
        found = node.keys.get(key) if isinstance(key, str) else node.indices.get(key)
        if found is not None:
            out.append(found)
        if node.any is not None:
            out.append(node.any)
    return tuple(out)
