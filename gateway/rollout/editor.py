"""In-place edits of one route in routes.yaml, keeping the file's comments and layout.

The file is the source of truth (the gateway hot-reloads it), so a promotion edits its
text rather than writing a new file from data: each edit finds the route in PyYAML's node
tree and rewrites only the span it changes (a value, a weight), inserts one line in the
route's own indentation (or one entry in a flow mapping), or deletes the lines of one key.
Everything else is kept byte for byte. Edits return new text; the caller validates it as
a routes file and writes it with `write_atomically`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode


class EditError(Exception):
    """The edit cannot be made safely in this file's text."""


def route_node(text: str, name: str) -> MappingNode:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    routes = _get(root, "routes") if isinstance(root, MappingNode) else None
    if isinstance(routes, SequenceNode):
        for item in routes.value:
            found = _get(item, "name") if isinstance(item, MappingNode) else None
            if isinstance(found, ScalarNode) and found.value == name:
                route: MappingNode = item
                return route
    raise EditError(f"no route named {name!r}")


def keys(text: str, route: str) -> list[str]:
    return [k.value for k, _ in route_node(text, route).value if isinstance(k, ScalarNode)]


def replace_value(text: str, route: str, key: str, value: str) -> str:
    """Set `key` of the route to `value` (YAML text), adding the key when it is missing."""
    node = route_node(text, route)
    entry = _entry(node, key)
    if entry is None:
        return _insert(text, node, key, value)
    key_node, value_node = entry
    if not isinstance(value_node, CollectionNode) or value_node.flow_style:
        start, end = value_node.start_mark.index, value_node.end_mark.index
        return text[:start] + value + text[end:]
    # A block collection runs over the following lines: from the key's end (its colon
    # included) to its last scalar, it becomes one line.
    start, end = key_node.end_mark.index, _end(value_node)
    return text[:start] + ": " + value + text[end:]


def set_weights(text: str, route: str, weights: dict[str, int]) -> str:
    """The route's `upstream:` as these weights: each number rewritten in place when the
    mapping already names the same upstreams, else the whole value as a flow mapping."""
    node = route_node(text, route)
    entry = _entry(node, "upstream")
    current = entry[1] if entry is not None else None
    if isinstance(current, MappingNode):
        spans = {k.value: v for k, v in current.value if isinstance(k, ScalarNode)}
        if set(spans) == set(weights) and all(isinstance(v, ScalarNode) for v in spans.values()):
            for name, weight_node in sorted(
                spans.items(), key=lambda item: -item[1].start_mark.index
            ):  # from the end of the file, so that earlier indexes stay valid
                start, end = weight_node.start_mark.index, weight_node.end_mark.index
                text = text[:start] + str(weights[name]) + text[end:]
            return text
    flow = ", ".join(f"{name}: {weight}" for name, weight in weights.items())
    return replace_value(text, route, "upstream", "{" + flow + "}")


def remove_key(text: str, route: str, key: str) -> str:
    """Delete `key` and its value from the route (a no-op when it is not there)."""
    node = route_node(text, route)
    keys = [k for k, _ in node.value]
    entry = _entry(node, key)
    if entry is None:
        return text
    key_node, value_node = entry
    if node.flow_style:
        i = keys.index(key_node)
        if i > 0:
            start = _end(node.value[i - 1][1])
            return text[:start] + text[_end(value_node) :]
        if len(keys) == 1:
            raise EditError(f"route {route!r}: {key!r} is its only key")
        return text[: key_node.start_mark.index] + text[keys[1].start_mark.index :]
    line_start = text.rfind("\n", 0, key_node.start_mark.index) + 1
    if text[line_start : key_node.start_mark.index].strip():
        raise EditError(f"route {route!r}: {key!r} does not start its line; edit it by hand")
    line_end = text.find("\n", _end(value_node))
    return text[:line_start] + text[len(text) if line_end < 0 else line_end + 1 :]


def write_atomically(path: Path, text: str) -> None:
    """Replace the file in one rename, so the watching gateway never reads half of it."""
    mode = path.stat().st_mode & 0o777
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _insert(text: str, node: MappingNode, key: str, value: str) -> str:
    if node.flow_style:
        brace = node.end_mark.index - 1
        if text[brace] != "}":
            raise EditError(f"cannot find the end of the route at line {node.start_mark.line + 1}")
        return text[:brace] + f", {key}: {value}" + text[brace:]
    indent: int = node.value[0][0].start_mark.column
    line_end = text.find("\n", _end(node))
    if line_end < 0:
        return text + "\n" + " " * indent + f"{key}: {value}\n"
    return text[:line_end] + "\n" + " " * indent + f"{key}: {value}" + text[line_end:]


def _entry(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _get(node: MappingNode, key: str) -> Node | None:
    entry = _entry(node, key)
    return entry[1] if entry is not None else None


def _end(node: Node) -> int:
    """Where the node's own text ends: a block collection ends with its last item."""
    if not isinstance(node, CollectionNode) or node.flow_style:
        return int(node.end_mark.index)
    if isinstance(node, MappingNode) and node.value:
        return _end(node.value[-1][1])
    if isinstance(node, SequenceNode) and node.value:
        return _end(node.value[-1])
    return int(node.end_mark.index)
