"""cdc/mappings.yaml: the valid shape, and every error kind reported with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdc import mapping
from cdc.errors import MappingError
from cdc.sink import SqlSink, create_engine
from new_services.search import manage as search

CATEGORIES = """\
  - topic: legacy.public.categories
    target: search_categories
    key: [id]
    columns: {id: id, slug: slug, name: name}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        mapping.parse(text.encode(), "mappings.yaml")
    return [str(i) for i in info.value.issues]


def test_the_shipped_mapping_is_valid_and_frozen() -> None:
    loaded = mapping.load()
    assert loaded.topic_prefix == "legacy"
    assert loaded.dead_letter_topic == "strangler.cdc.dlq"
    assert loaded.topics == ["legacy.public.categories", "legacy.public.products"]
    products = loaded.by_topic["legacy.public.products"]
    assert products.key == ("product_id",)
    assert products.key_sources == (("id", None),)
    assert next(c for c in products.columns if c.target == "updated_at").type == "timestamp"
    assert products.join is not None
    assert products.join.columns == (("category_slug", "slug"), ("category_name", "name"))
    assert loaded.joined_by("search_categories") == [products]
    with pytest.raises(AttributeError):
        products.target = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["line 1: the file is empty"]),
        ("tables: [\n", ["invalid YAML"]),
        ("- a\n", ["line 1: mapping file must be a mapping"]),
        ("tables:\n" + CATEGORIES, ["line 1: missing 'topic_prefix'"]),
        ("topic_prefix: legacy\n", ["line 1: missing 'tables'"]),
        ("topic_prefix: legacy\ntables: []\n", ["line 2: tables must be a non-empty list"]),
        (
            "topic_prefix: legacy\ncolour: red\ntables:\n" + CATEGORIES,
            ["line 2: mapping file: unknown key 'colour'"],
        ),
        (
            "topic_prefix: 'no spaces'\ntables:\n" + CATEGORIES,
            ["line 1: topic_prefix 'no spaces' is not a topic name"],
        ),
        (
            "topic_prefix: legacy\ndead_letter_topic: 'a/b'\ntables:\n" + CATEGORIES,
            ["line 2: 'a/b' is not a topic name"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.categories\n",
            [
                "line 3: table: missing 'target'",
                "line 3: table: missing 'key'",
                "line 3: table: missing 'columns'",
            ],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - {topic: other.public.x, target: x, key: [id],"
            " columns: {id: id}}\n",
            ["line 3: topic 'other.public.x' is not legacy.<schema>.<table>"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - {topic: legacy.x, target: x, key: [id],"
            " columns: {id: id}}\n",
            ["line 3: topic 'legacy.x' is not legacy.<schema>.<table>"],
        ),
        (
            "topic_prefix: legacy\ntables:\n"
            + CATEGORIES
            + "  - {topic: legacy.public.categories, target: other, key: [id], columns: {id: id}}\n",
            ["line 7: topic 'legacy.public.categories' is mapped twice"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - {topic: legacy.public.x, target: 'x-y', key: [id],"
            " columns: {id: id}}\n",
            ["line 3: table 'legacy.public.x': target: 'x-y' is not a column or table name"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns: {id: id}\n    truncate: maybe\n",
            ["line 7: table 'legacy.public.x': truncate must be true or false"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns: {id: id}\n    wat: 1\n",
            ["line 7: table: unknown key 'wat'"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: []\n    columns: {id: id}\n",
            ["line 5: table 'legacy.public.x': key must be a non-empty list of target columns"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [nope]\n    columns: {id: id}\n",
            ["line 5: table 'legacy.public.x': key column 'nope' is not in columns"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns: {}\n",
            [
                "line 5: table 'legacy.public.x': key column 'id' is not in columns",
                "line 6: table 'legacy.public.x': columns must map at least one column",
            ],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns:\n      id: id\n      'bad name': name\n",
            ["line 8: table 'legacy.public.x': 'bad name' is not a column name"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns:\n      id: id\n      at: {from: at, type: epoch}\n",
            ["line 8: table 'legacy.public.x': unknown type 'epoch' (one of: bytes, date"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns:\n      id: id\n      at: {form: at}\n",
            ["line 8: table 'legacy.public.x': column 'at': unknown key 'form'"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns: {id: id}\n    position: id\n",
            ["line 7: table 'legacy.public.x': position 'id' is also a column"],
        ),
        (
            "topic_prefix: legacy\ntables:\n  - topic: legacy.public.x\n    target: x\n"
            "    key: [id]\n    columns: {id: id, cat: cat}\n"
            "    join: {target: cats, on: {cat: id}, columns: {cat_name: name}}\n",
            ["line 7: table 'legacy.public.x': join: 'cats' is not a target mapped above"],
        ),
        (
            "topic_prefix: legacy\ntables:\n"
            + CATEGORIES
            + "  - topic: legacy.public.x\n    target: x\n    key: [id]\n    columns: {id: id}\n"
            "    join:\n      target: search_categories\n      on: {category: slug}\n"
            "      columns: {id: name, category_colour: colour}\n      extra: 1\n",
            [
                "line 15: table 'legacy.public.x': join: unknown key 'extra'",
                "line 13: table 'legacy.public.x': join: 'category' is not in columns",
                "line 13: table 'legacy.public.x': join: 'slug' is not 'search_categories''s key",
                "line 14: table 'legacy.public.x': join: 'search_categories' has no 'colour'",
                "line 12: table 'legacy.public.x': join column 'id' is also a column",
            ],
        ),
        (
            "topic_prefix: legacy\ntables:\n"
            + CATEGORIES
            + "  - topic: legacy.public.x\n    target: x\n    key: [id]\n"
            "    columns: {id: id, a: a, b: b}\n"
            "    join:\n      target: search_categories\n      on: {a: id, b: id}\n"
            "      columns: {}\n      missing: [1]\n",
            [
                "line 13: table 'legacy.public.x': join: on must name exactly one column pair",
                "line 14: table 'legacy.public.x': join: columns must not be empty",
                "line 15: table 'legacy.public.x': join: missing must be a single value",
            ],
        ),
    ],
)
def test_each_error_kind_is_reported_with_its_line(text: str, expected: list[str]) -> None:
    errors = errors_of(text)
    assert len(errors) == len(expected), errors
    for want in expected:
        assert any(got.startswith(want) or want in got for got in errors), (want, errors)


def test_every_error_is_reported_sorted_by_line_not_just_the_first() -> None:
    errors = errors_of(
        "topic_prefix: legacy\n"
        "dead_letter_topic: 'dl q'\n"
        "tables:\n"
        "  - topic: legacy.public.x\n"
        "    target: x\n"
        "    key: [nope]\n"
        "    columns: {id: id, at: {from: at, type: epoch}}\n"
        "  - {topic: elsewhere, target: 'y z', key: [id], columns: {id: id}}\n"
    )
    lines = [int(e.split(":")[0].removeprefix("line ")) for e in errors]
    assert lines == [2, 6, 7, 8, 8]
    assert lines == sorted(lines)


def test_the_target_database_is_checked_with_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search.migrate(url)
    loaded = mapping.parse(
        (
            "topic_prefix: legacy\ntables:\n"
            + CATEGORIES
            + "  - topic: legacy.public.products\n    target: search_documents\n"
            "    key: [name]\n    columns:\n      name: name\n      colour: colour\n"
            "  - {topic: legacy.public.gone, target: gone, key: [id], columns: {id: id}}\n"
        ).encode(),
        "mappings.yaml",
    )
    engine = create_engine(url)
    try:
        with pytest.raises(MappingError) as info:
            SqlSink(engine, loaded).open()
    finally:
        engine.dispose()
    assert [str(i) for i in info.value.issues] == [
        "line 12: 'search_documents' has no column 'colour'",
        "line 7: key is not 'search_documents''s primary key",
        "line 13: no table 'gone' in the target",
    ]


def test_cdc_check_prints_the_tables_or_every_error(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdc", "check", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    good = check(mapping.DEFAULT_PATH)
    assert good.returncode == 0, good.stderr
    assert "legacy.public.products -> search_documents key ['product_id']" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("topic_prefix: legacy\ntables:\n  - {topic: legacy.x, target: x}\n")
    result = check(bad)
    assert result.returncode == 1
    assert f"{bad}:3: topic 'legacy.x' is not legacy.<schema>.<table>" in result.stderr
    assert f"{bad}:3: table: missing 'key'" in result.stderr
