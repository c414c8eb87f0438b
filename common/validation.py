"""Reading YAML config with line numbers, reporting every error rather than the first.

Config is read from PyYAML's node tree, not from plain Python objects, so every problem
names its line; a `NodeReader` collects them all (YARP's config validator does the same)
and the caller raises one `ConfigError` holding the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_SIZE = re.compile(r"^(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "KiB": 2**10,
    "MB": 10**6,
    "MiB": 2**20,
    "GB": 10**9,
    "GiB": 2**30,
}
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    line: int  # 1-based; 0 when the file could not be read at all
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


def describe(source: str, issues: list[ConfigIssue]) -> str:
    """Every issue of a rejected file, one a line, as `source:line: message`."""
    lines = "\n".join(f"  {source}:{i.line}: {i.message}" for i in issues)
    return f"{source}: {len(issues)} error(s)\n{lines}"


class ConfigError(Exception):
    """A config file was rejected; `issues` holds every problem found, with its line."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(describe(source, issues))


def read(path: str | Path) -> bytes:
    """A config file's bytes; an unreadable file is a ConfigError like any other problem."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue(0, f"cannot read: {exc.strerror}")]) from exc


def compose(data: bytes, source: str) -> Node | None:
    """The YAML node tree of `data`; unreadable YAML is a ConfigError with its line."""
    try:
        return yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [ConfigIssue(0, f"not UTF-8: {exc.reason}")]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError(source, [ConfigIssue(line, f"invalid YAML: {exc.problem}")]) from exc


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r} (use e.g. 250ms, 5s, 1m)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return seconds


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"bad size {text!r} (use e.g. 512KiB, 10MiB, 1048576)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_share(text: str) -> float:
    """A share of a whole: `0.25` or `25%`, between 0 and 1."""
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a share (use e.g. 0.25 or 25%)") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} must be between 0 and 1 (or 0% and 100%)")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} must be a positive integer")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} must be a whole number, 0 or more")
    return int(text)


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


class NodeReader:
    """Walks a node tree, recording every problem with its line in `issues`."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def error(self, node: Node, message: str) -> None:
        self.issues.append(ConfigIssue(line_of(node), message))

    def raise_if_any(self, source: str) -> None:
        if self.issues:
            raise ConfigError(source, sorted(self.issues, key=lambda i: i.line))

    def mapping(self, node: Node, what: str, allowed: set[str] | None) -> dict[str, Node] | None:
        """The mapping's entries; `allowed` None admits any (user-chosen) key."""
        if not isinstance(node, MappingNode):
            self.error(node, f"{what} must be a mapping")
            return None
        result: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.error(key_node, f"{what}: keys must be strings")
            elif key in result:
                self.error(key_node, f"{what}: duplicate key {key!r}")
            elif allowed is not None and key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.error(key_node, f"{what}: unknown key {key!r} (expected one of: {expected})")
            else:
                result[key] = value_node
        return result

    def scalar(self, node: Node, what: str) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def converted(self, node: Node, what: str, convert: Callable[[str], T]) -> T | None:
        text = self.scalar(node, what)
        if text is None:
            return None
        try:
            return convert(text)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None

    def optional(
        self,
        fields: dict[str, Node],
        key: str,
        what: str,
        convert: Callable[[str], T],
        default: Any,
    ) -> Any:
        if key not in fields:
            return default
        value = self.converted(fields[key], f"{what}: {key}", convert)
        return default if value is None else value

    def choice(self, node: Node, what: str, choices: tuple[str, ...]) -> str | None:
        value = self.scalar(node, what)
        if value is not None and value not in choices:
            self.error(node, f"{what} must be one of {', '.join(choices)} (got {value!r})")
            return None
        return value

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.error(node, f"{what} must be a list")
            return []
        return list(node.value)
