"""Edits of one route in routes.yaml's text: only the changed spans move, comments stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.rollout.editor import (
    EditError,
    keys,
    remove_key,
    replace_value,
    set_weights,
    write_atomically,
)

BLOCK = """\
# the migration map
routes:
  - name: search     # being extracted
    path: /search
    upstream: legacy # the monolith, for now
    auth: optional
  - name: products
    path: /products
    upstream: legacy
"""


def test_a_scalar_becomes_a_flow_mapping_in_place() -> None:
    edited = replace_value(BLOCK, "search", "upstream", "{legacy: 90, search: 10}")
    assert edited == BLOCK.replace(
        "upstream: legacy # the monolith", "upstream: {legacy: 90, search: 10} # the monolith"
    )


def test_weights_are_rewritten_number_by_number() -> None:
    text = BLOCK.replace(
        "    upstream: legacy # the monolith, for now\n",
        "    upstream:\n      legacy: 90   # the monolith\n      search: 10   # the new one\n",
    )
    edited = set_weights(text, "search", {"legacy": 50, "search": 50})
    assert edited == text.replace("legacy: 90 ", "legacy: 50 ").replace(
        "search: 10 ", "search: 50 "
    )
    flow = replace_value(BLOCK, "search", "upstream", "{legacy: 90, search: 10}")
    assert "{legacy: 80, search: 20}" in set_weights(flow, "search", {"legacy": 80, "search": 20})
    migrated = replace_value(text, "search", "upstream", "search")
    assert "    upstream: search   # the new one\n    auth: optional\n" in migrated
    assert "legacy: 90" not in migrated


def test_a_key_is_added_in_the_routes_own_indentation() -> None:
    edited = replace_value(BLOCK, "search", "shadow", "{upstream: search}")
    assert edited == BLOCK.replace(
        "    auth: optional\n", "    auth: optional\n    shadow: {upstream: search}\n"
    )
    last = replace_value(BLOCK.rstrip("\n"), "products", "shadow", "{upstream: search}")
    assert last.endswith("    upstream: legacy\n    shadow: {upstream: search}\n")
    flow = "routes:\n  - {name: a, path: /a, upstream: legacy}   # flow\n"
    assert replace_value(flow, "a", "shadow", "{upstream: s}") == (
        "routes:\n  - {name: a, path: /a, upstream: legacy, shadow: {upstream: s}}   # flow\n"
    )


def test_a_key_is_removed_with_all_its_lines() -> None:
    text = BLOCK.replace(
        "    auth: optional\n",
        "    shadow:\n      upstream: search   # compare\n      compare:\n"
        "        ignore: [$.took_ms]\n    auth: optional\n",
    )
    assert remove_key(text, "search", "shadow") == BLOCK
    assert remove_key(BLOCK, "search", "shadow") == BLOCK
    flow = "routes:\n  - {name: a, path: /a, shadow: {upstream: s}, upstream: legacy}\n"
    assert remove_key(flow, "a", "shadow") == (
        "routes:\n  - {name: a, path: /a, upstream: legacy}\n"
    )
    first = "routes:\n  - {shadow: {upstream: s}, name: a, path: /a, upstream: legacy}\n"
    assert (
        remove_key(first, "a", "shadow") == "routes:\n  - {name: a, path: /a, upstream: legacy}\n"
    )
    leading = "routes:\n  - shadow: {upstream: s}\n    name: a\n"
    with pytest.raises(EditError, match="does not start its line"):
        remove_key(leading, "a", "shadow")


def test_unknown_routes_and_keys() -> None:
    with pytest.raises(EditError, match="no route named 'nope'"):
        replace_value(BLOCK, "nope", "upstream", "x")
    assert keys(BLOCK, "search") == ["name", "path", "upstream", "auth"]


def test_the_file_is_replaced_in_one_rename(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(BLOCK)
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_atomically(path, "new text\n")
    assert path.read_text() == "new text\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # a new file: the watcher sees it whole
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yaml"]
