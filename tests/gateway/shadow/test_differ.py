"""The response differ: every difference kind, the rules, the normalisers, noise learning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.compare import CompareRules, Wildcard, format_path, parse_path
from gateway.shadow.differ import Answer, Difference, diff, generalise, noisy_paths

JSON_TYPE = [(b"content-type", b"application/json")]


def answer(
    body: Any, *, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Answer:
    return Answer(status, JSON_TYPE if headers is None else headers, json.dumps(body).encode())


def kinds(primary: Any, candidate: Any, **rules: Any) -> list[tuple[str, str]]:
    comparison = diff(answer(primary), answer(candidate), CompareRules(**rules))
    return [(d.path, d.kind) for d in comparison.differences]


# --- difference kinds ----------------------------------------------------------------------


def test_identical_answers() -> None:
    body = {"results": [{"id": 1, "price": 9.99}], "total": 1}
    comparison = diff(answer(body), answer(json.loads(json.dumps(body))), CompareRules())
    assert comparison.verdict == "identical"
    assert comparison.differences == comparison.noisy == ()
    assert comparison.body_compared


def test_key_order_does_not_matter() -> None:
    primary = Answer(200, JSON_TYPE, b'{"a": 1, "b": [1, 2]}')
    candidate = Answer(200, JSON_TYPE, b'{"b":[1,2],"a":1}')
    assert diff(primary, candidate, CompareRules()).verdict == "identical"


def test_value_changed_has_path_and_both_values() -> None:
    primary = {"results": [{"id": i, "price": 10.0 + i} for i in range(5)]}
    candidate = json.loads(json.dumps(primary))
    candidate["results"][3]["price"] = 99.5
    comparison = diff(answer(primary), answer(candidate), CompareRules())
    assert comparison.verdict == "different"
    assert comparison.differences == (
        Difference("$.results[3].price", "value_changed", "13.0", "99.5"),
    )


@pytest.mark.parametrize(
    ("primary", "candidate", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": 1}, [("$.b", "missing_field")]),
        ({"a": 1}, {"a": 1, "c": 3}, [("$.c", "extra_field")]),
        ({"a": 1}, {"a": "1"}, [("$.a", "type_changed")]),
        ({"a": True}, {"a": 1}, [("$.a", "type_changed")]),  # Python's True == 1 is not JSON's
        ({"a": None}, {"a": 0}, [("$.a", "type_changed")]),
        ({"a": {"x": 1}}, {"a": [1]}, [("$.a", "type_changed")]),
        ({"a": "x"}, {"a": "y"}, [("$.a", "value_changed")]),
        ({"a": False}, {"a": True}, [("$.a", "value_changed")]),
        ([1, 2, 3], [1, 2], [("$", "array_length")]),
        ([1, 2, 3], [1, 5], [("$", "array_length"), ("$[1]", "value_changed")]),
        ([1, 2, 3], [3, 1, 2], [("$", "order_only")]),
        (
            {"a b": 1, "ok-1_x": 2},
            {"a b": 2, "ok-1_x": 3},
            [('$["a b"]', "value_changed"), ("$.ok-1_x", "value_changed")],
        ),
    ],
)
def test_difference_kinds(primary: Any, candidate: Any, expected: list[tuple[str, str]]) -> None:
    assert kinds(primary, candidate) == expected


def test_missing_and_extra_fields_carry_the_value_on_their_side() -> None:
    comparison = diff(answer({"a": [1]}), answer({"b": {"c": "d"}}), CompareRules())
    assert comparison.differences == (
        Difference("$.a", "missing_field", "[1]", None),
        Difference("$.b", "extra_field", None, '{"c":"d"}'),
    )


def test_order_only_is_one_difference_not_many_value_changes() -> None:
    primary = [{"id": i, "name": f"n{i}"} for i in range(10)]
    comparison = diff(answer(primary), answer(primary[::-1]), CompareRules())
    assert comparison.differences == (Difference("$", "order_only", None, None),)


def test_reordering_plus_a_change_is_not_order_only() -> None:
    primary = [{"id": i} for i in range(4)]
    candidate = [{"id": 1}, {"id": 0}, {"id": 2}, {"id": 9}]
    assert kinds(primary, candidate) == [
        ("$[0].id", "value_changed"),
        ("$[1].id", "value_changed"),
        ("$[3].id", "value_changed"),
    ]


def test_nested_order_only_is_reported_at_the_inner_array() -> None:
    primary = [{"tags": ["a", "b"]}, {"tags": ["c"]}]
    candidate = [{"tags": ["b", "a"]}, {"tags": ["c"]}]
    assert kinds(primary, candidate) == [("$[0].tags", "order_only")]


def test_status_and_header_differences() -> None:
    primary = Answer(200, [(b"content-type", b"application/json"), (b"etag", b'"1"')], b"{}")
    candidate = Answer(503, [(b"content-type", b"text/html"), (b"etag", b'"2"')], b"{}")
    comparison = diff(
        primary, candidate, CompareRules(headers=("Content-Type", "ETag", "x-absent"))
    )
    assert comparison.differences == (
        Difference("status", "status", "200", "503"),
        Difference("headers.content-type", "header", "application/json", "text/html"),
        Difference("headers.etag", "header", '"1"', '"2"'),
    )


def test_only_the_chosen_headers_are_compared() -> None:
    primary = Answer(200, [*JSON_TYPE, (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT")], b"{}")
    candidate = Answer(200, [*JSON_TYPE, (b"date", b"Tue, 02 Jan 2024 00:00:00 GMT")], b"{}")
    assert diff(primary, candidate, CompareRules()).verdict == "identical"
    comparison = diff(primary, candidate, CompareRules(headers=("date",)))
    assert [d.path for d in comparison.differences] == ["headers.date"]


def test_a_header_missing_on_one_side() -> None:
    comparison = diff(Answer(200, [], b""), Answer(200, JSON_TYPE, b""), CompareRules())
    assert comparison.differences == (
        Difference("headers.content-type", "header", None, "application/json"),
    )


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (b"application/json; charset=utf-8", b"Application/JSON;charset=UTF-8"),
        (b"text/plain; charset=utf-8; format=flowed", b'text/plain;format=flowed; charset="utf-8"'),
    ],
)
def test_media_types_compare_without_case_spacing_or_parameter_order(
    ours: bytes, theirs: bytes
) -> None:
    primary = Answer(200, [(b"content-type", ours)], b"x")
    candidate = Answer(200, [(b"Content-Type", theirs)], b"x")
    assert diff(primary, candidate, CompareRules()).verdict == "identical"


def test_media_type_parameter_values_other_than_charset_keep_their_case() -> None:
    primary = Answer(200, [(b"content-type", b"multipart/mixed; boundary=AB")], b"x")
    candidate = Answer(200, [(b"content-type", b"multipart/mixed; boundary=ab")], b"x")
    assert diff(primary, candidate, CompareRules()).verdict == "different"


# --- truncated, text and binary bodies -----------------------------------------------------


def test_truncated_bodies_compare_status_and_headers_only() -> None:
    primary = Answer(200, JSON_TYPE, b'{"a": 1', truncated=True)
    candidate = Answer(200, JSON_TYPE, b'{"a": 2')
    comparison = diff(primary, candidate, CompareRules())
    assert (comparison.verdict, comparison.differences, comparison.body_compared) == (
        "status_only",
        (),
        False,
    )


def test_truncated_with_a_status_difference_is_different_and_says_the_body_was_skipped() -> None:
    primary = Answer(200, JSON_TYPE, b"{", truncated=True)
    comparison = diff(primary, Answer(500, JSON_TYPE, b"{}", truncated=True), CompareRules())
    assert comparison.verdict == "different"
    assert not comparison.body_compared
    assert [d.kind for d in comparison.differences] == ["status"]


def test_text_bodies_compare_by_equality_with_an_excerpt_at_the_first_difference() -> None:
    html = [(b"content-type", b"text/html")]
    primary = Answer(200, html, b"<p>" + b"x" * 50 + b"price 10</p>")
    candidate = Answer(200, html, b"<p>" + b"x" * 50 + b"price 11</p>")
    (difference,) = diff(primary, candidate, CompareRules()).differences
    assert difference.path == difference.kind == "body"
    assert difference.primary == '65 bytes, from char 40: "xxxxxxxxxxxxxprice 10</p>"'
    assert difference.candidate == '65 bytes, from char 40: "xxxxxxxxxxxxxprice 11</p>"'


def test_binary_bodies_compare_by_equality_and_size() -> None:
    png = [(b"content-type", b"image/png")]
    comparison = diff(Answer(200, png, b"\x89PNG1"), Answer(200, png, b"\x89PNG22"), CompareRules())
    assert comparison.differences == (Difference("body", "body", "5 bytes", "6 bytes"),)
    assert (
        diff(Answer(200, png, b"\x00"), Answer(200, png, b"\x00"), CompareRules()).verdict
        == "identical"
    )


@pytest.mark.parametrize(
    ("primary_type", "primary_body", "candidate_body"),
    [
        (b"application/json", b'{"a": 1}', b"<html>oops</html>"),  # garbage from the candidate
        (b"application/json", b'{"a": NaN}', b'{"a": NaN }'),  # not RFC 8259 JSON
        (b"text/plain", b'{"a": 1}', b'{"a":1}'),  # JSON only when both sides say so
    ],
)
def test_bodies_that_are_not_both_json_compare_as_bytes(
    primary_type: bytes, primary_body: bytes, candidate_body: bytes
) -> None:
    primary = Answer(200, [(b"content-type", primary_type)], primary_body)
    candidate = Answer(200, [(b"content-type", b"application/json")], candidate_body)
    comparison = diff(primary, candidate, CompareRules(headers=()))
    assert [d.kind for d in comparison.differences] == ["body"]


def test_vendor_json_types_are_parsed() -> None:
    problem = [(b"content-type", b"application/problem+json")]
    primary = Answer(400, problem, b'{"title": "x", "detail": "a"}')
    candidate = Answer(400, problem, b'{"detail":"a","title":"x"}')
    assert diff(primary, candidate, CompareRules()).verdict == "identical"


def test_nesting_too_deep_to_walk_falls_back_to_bytes() -> None:
    deep_a, deep_b = b"[" * 5000 + b"1" + b"]" * 5000, b"[" * 5000 + b"2" + b"]" * 5000
    comparison = diff(
        Answer(200, JSON_TYPE, deep_a), Answer(200, JSON_TYPE, deep_b), CompareRules()
    )
    assert [d.kind for d in comparison.differences] == ["body"]


# --- rules ---------------------------------------------------------------------------------


def test_ignore_paths_with_wildcards() -> None:
    primary = {"took_ms": 3, "meta": {"host": "a", "v": 1}, "results": [{"id": 1, "score": 0.5}]}
    candidate = {"took_ms": 9, "meta": {"host": "b"}, "results": [{"id": 1, "score": 0.7}]}
    assert len(kinds(primary, candidate)) == 4
    rules = {"ignore": ("$.took_ms", "$.meta.*", "$.results[*].score")}
    assert kinds(primary, candidate, **rules) == []


def test_ignore_covers_the_subtree_and_missing_or_extra_fields() -> None:
    primary = {"debug": {"trace": [1, 2]}, "keep": 1}
    assert kinds(primary, {"keep": 1}, ignore=("$.debug",)) == []
    assert kinds({"keep": 1}, primary, ignore=("$.debug",)) == []
    assert kinds(primary, {"keep": 2}, ignore=("$.debug",)) == [("$.keep", "value_changed")]


def test_ignore_a_single_index() -> None:
    assert kinds([1, 2, 3], [1, 9, 4], ignore=("$[1]",)) == [("$[2]", "value_changed")]


def test_ignore_the_whole_body() -> None:
    assert kinds({"a": 1}, {"b": 2}, ignore=("$",)) == []


def test_unordered_arrays_compare_as_multisets() -> None:
    primary = {"results": [{"id": 1}, {"id": 2}, {"id": 2}]}
    assert (
        kinds(primary, {"results": [{"id": 2}, {"id": 1}, {"id": 2}]}, unordered=("$.results",))
        == []
    )
    assert kinds(
        primary, {"results": [{"id": 2}, {"id": 1}, {"id": 1}]}, unordered=("$.results",)
    ) == [("$.results[2].id", "value_changed")]


def test_unordered_arrays_of_different_lengths() -> None:
    assert kinds([1, 2, 3], [3, 1], unordered=("$",)) == [("$", "array_length")]


def test_unordered_elements_honour_ignore_and_tolerance() -> None:
    primary = {
        "results": [
            {"id": 1, "score": 0.1, "price": 1.00001},
            {"id": 2, "score": 0.2, "price": 2.0},
        ]
    }
    candidate = {
        "results": [
            {"id": 2, "score": 0.9, "price": 2.00002},
            {"id": 1, "score": 0.8, "price": 1.0},
        ]
    }
    rules = {
        "unordered": ("$.results",),
        "ignore": ("$.results[*].score",),
        "numeric_tolerance": 0.001,
    }
    assert kinds(primary, candidate, **rules) == []


def test_large_unordered_arrays_pair_elements_by_what_is_compared() -> None:
    # Beyond a few unmatched elements there is no pairwise search: the ignored and noisy
    # fields must not keep equal elements apart.
    primary = [{"id": i, "score": i, "at": i} for i in range(40)]
    candidate = [{"id": i, "score": -i, "at": -i} for i in reversed(range(40))]
    rules = CompareRules(unordered=("$",), ignore=("$[*].score",), noisy=frozenset({"$[*].at"}))
    comparison = diff(answer(primary), answer(candidate), rules)
    assert comparison.verdict == "noise_only"
    assert len(comparison.noisy) == 39  # every "at" but 0 == -0


def test_nested_unordered_arrays() -> None:
    primary = [{"tags": ["a", "b"]}, {"tags": ["c", "d"]}]
    candidate = [{"tags": ["d", "c"]}, {"tags": ["b", "a"]}]
    assert kinds(primary, candidate, unordered=("$", "$[*].tags")) == []


@pytest.mark.parametrize(
    ("primary", "candidate", "tolerance", "equal"),
    [
        (b"1", b"1.0", 0.0, True),
        (b"1", b"1e0", 0.0, True),
        (b"100", b"1E2", 0.0, True),
        (b"0.1", b"0.10000001", 0.0, False),
        (b"0.1", b"0.10000001", 0.0001, True),
        (b"0.1", b"0.1002", 0.0001, False),
        (b"0.5", b"0.75", 0.25, True),  # the tolerance itself is within it
        (b"0.5", b"0.75", 0.125, False),
        (b"12345678901234567890", b"12345678901234567891", 0.0, False),
    ],
)
def test_numbers_compare_by_value_within_the_tolerance(
    primary: bytes, candidate: bytes, tolerance: float, equal: bool
) -> None:
    comparison = diff(
        Answer(200, JSON_TYPE, b'{"n": ' + primary + b"}"),
        Answer(200, JSON_TYPE, b'{"n": ' + candidate + b"}"),
        CompareRules(numeric_tolerance=tolerance),
    )
    assert (comparison.verdict == "identical") is equal


def test_differences_are_capped() -> None:
    comparison = diff(
        answer(list(range(50))), answer(list(range(100, 150))), CompareRules(max_differences=7)
    )
    assert len(comparison.differences) == 7


# --- normalisers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("2024-05-01T10:00:00Z", "2024-06-30T23:59:59.123456+02:00"),
        ("2024-05-01 10:00", "2024-05-01T10:00:01.5"),
        ("Mon, 01 Jan 2024 00:00:00 GMT", "2024-01-01T00:00:00Z"),
    ],
)
def test_timestamps_normalise_when_asked(ours: str, theirs: str) -> None:
    assert kinds({"at": ours}, {"at": theirs}) == [("$.at", "value_changed")]
    assert kinds({"at": ours}, {"at": theirs}, normalise=("timestamps",)) == []


def test_uuids_normalise_when_asked() -> None:
    ours, theirs = "0b9a5f3e-4a3c-4cde-9d1f-2f0e6b1c7a11", "F47AC10B-58CC-4372-A567-0E02B2C3D479"
    assert kinds({"id": ours}, {"id": theirs}, normalise=("timestamps",)) == [
        ("$.id", "value_changed")
    ]
    assert kinds({"id": ours}, {"id": theirs}, normalise=("uuids",)) == []


def test_a_normalised_value_still_differs_from_a_value_of_another_kind() -> None:
    comparison = diff(
        answer({"at": "2024-05-01T10:00:00Z"}),
        answer({"at": "yesterday"}),
        CompareRules(normalise=("timestamps",)),
    )
    assert comparison.differences == (
        Difference("$.at", "value_changed", '"2024-05-01T10:00:00Z"', '"yesterday"'),
    )


def test_normalisers_apply_inside_unordered_arrays_and_text_bodies() -> None:
    primary = [{"id": 1, "at": "2024-01-01T00:00:00Z"}, {"id": 2, "at": "2024-01-01T00:00:00Z"}]
    candidate = [{"id": 2, "at": "2025-01-01T00:00:00Z"}, {"id": 1, "at": "2025-02-01T00:00:00Z"}]
    assert kinds(primary, candidate, unordered=("$",), normalise=("timestamps",)) == []
    text = [(b"content-type", b"text/plain")]
    comparison = diff(
        Answer(200, text, b"served 2024-01-01T00:00:00Z by 0b9a5f3e-4a3c-4cde-9d1f-2f0e6b1c7a11"),
        Answer(200, text, b"served 2025-03-01T12:00:00Z by f47ac10b-58cc-4372-a567-0e02b2c3d479"),
        CompareRules(normalise=("timestamps", "uuids")),
    )
    assert comparison.verdict == "identical"


def test_long_values_are_cut() -> None:
    (difference,) = diff(answer({"a": "x" * 1000}), answer({"a": "y"}), CompareRules()).differences
    assert difference.primary is not None
    assert len(difference.primary) == 200
    assert difference.primary.endswith("…")


# --- noise ---------------------------------------------------------------------------------


def search(served_at: str, took: int, price: float = 9.5) -> dict[str, Any]:
    return {
        "took_ms": took,
        "results": [{"id": i, "price": price + i, "served_at": served_at} for i in range(3)],
    }


def test_noisy_paths_generalise_indices() -> None:
    first = answer(search("2024-01-01T00:00:00.001Z", 3))
    second = answer(search("2024-01-01T00:00:00.002Z", 4))
    learned = noisy_paths(first, second, CompareRules())
    assert learned == frozenset({"$.took_ms", "$.results[*].served_at"})
    assert noisy_paths(first, first, CompareRules()) == frozenset()


def test_noisy_paths_include_status_headers_and_body() -> None:
    html = [(b"content-type", b"text/html"), (b"etag", b"1")]
    first = Answer(200, html, b"<p>a</p>")
    second = Answer(404, [(b"content-type", b"text/html"), (b"etag", b"2")], b"<p>b</p>")
    assert noisy_paths(first, second, CompareRules(headers=("etag",))) == {
        "status",
        "headers.etag",
        "body",
    }


def test_differences_on_noisy_paths_are_reported_apart() -> None:
    primary, candidate = answer(search("t1", 3)), answer(search("t2", 5))
    rules = CompareRules(noisy=frozenset({"$.took_ms", "$.results[*].served_at"}))
    comparison = diff(primary, candidate, rules)
    assert comparison.verdict == "noise_only"
    assert comparison.differences == ()
    assert [d.path for d in comparison.noisy] == [
        "$.took_ms",
        *(f"$.results[{i}].served_at" for i in range(3)),
    ]

    comparison = diff(primary, answer(search("t2", 5, price=10.0)), rules)
    assert comparison.verdict == "different"
    assert [d.path for d in comparison.differences] == [f"$.results[{i}].price" for i in range(3)]
    assert len(comparison.noisy) == 4


def test_a_noisy_path_covers_that_path_only_not_its_neighbours() -> None:
    rules = CompareRules(noisy=frozenset({"$.a"}))
    comparison = diff(answer({"a": {"b": 1}, "c": 1}), answer({"a": {"b": 2}, "c": 2}), rules)
    assert [d.path for d in comparison.differences] == ["$.a.b", "$.c"]


def test_literal_noisy_paths() -> None:
    html = [(b"content-type", b"text/html")]
    rules = CompareRules(noisy=frozenset({"status", "body"}))
    comparison = diff(Answer(200, html, b"a"), Answer(201, html, b"b"), rules)
    assert comparison.verdict == "noise_only"
    assert [d.kind for d in comparison.noisy] == ["status", "body"]


def test_noise_learned_from_the_primary_masks_the_same_noise_in_the_candidate() -> None:
    rules = CompareRules(unordered=("$.results",))
    learned = noisy_paths(answer(search("a", 1)), answer(search("b", 2)), rules)
    rules = CompareRules(unordered=("$.results",), noisy=learned)
    assert diff(answer(search("a", 1)), answer(search("c", 7)), rules).verdict == "noise_only"
    reordered = search("c", 7)
    reordered["results"].reverse()
    assert diff(answer(search("a", 1)), answer(reordered), rules).verdict == "noise_only"


# --- paths and rule validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("$", ()),
        ("$.took_ms", ("took_ms",)),
        ("$.results[*].score", ("results", Wildcard.ANY, "score")),
        ("$.meta.*", ("meta", Wildcard.ANY)),
        ("$[0][12]", (0, 12)),
        ('$["a.b"]["*"]', ("a.b", "*")),
    ],
)
def test_parse_path(text: str, steps: tuple[object, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("took_ms", "must start with '$'"),
        ("$..a", "expected a name after '.' at 1"),
        ("$.a[", "expected [n], [*]"),
        ("$.a[-1]", "expected [n], [*]"),
        ("$.a[x]", "expected [n], [*]"),
        ('$["a]', "bad quoted name"),
        ('$["a"', "expected ']'"),
        ("$.a b", "unexpected ' ' at 3"),
    ],
)
def test_parse_path_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="JSON path") as info:
        parse_path(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"ignore": ("$.ok", "results")}, "must start with '$'"),
        ({"unordered": ("$.a[",)}, "expected [n]"),
        ({"noisy": frozenset({"$.a."})}, "expected a name"),
        ({"normalise": ("timestamps", "emails")}, "unknown normaliser 'emails'"),
        ({"numeric_tolerance": -1.0}, "numeric_tolerance"),
        ({"numeric_tolerance": float("nan")}, "numeric_tolerance"),
        ({"max_differences": 0}, "max_differences"),
    ],
)
def test_rules_are_validated(rules: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        CompareRules(**rules)
    assert message in str(info.value)


def test_generalise() -> None:
    assert generalise("$.results[3].tags[0]") == "$.results[*].tags[*]"
    assert generalise('$["a[1]"][2]') == '$["a[1]"][*]'
    assert generalise("headers.etag") == "headers.etag"


# --- properties ----------------------------------------------------------------------------

# No example database: nothing written under the working tree; no deadline: no timing flakes.
PROPERTY = settings(database=None, deadline=None)
keys = st.text(min_size=1, max_size=6)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(json_values)
def test_a_value_is_identical_to_itself(value: Any) -> None:
    assert diff(answer(value), answer(value), CompareRules(unordered=("$",))).verdict == "identical"
    assert noisy_paths(answer(value), answer(value), CompareRules()) == frozenset()


@PROPERTY
@given(json_values, json_values)
def test_diff_is_symmetric_without_rules(a: Any, b: Any) -> None:
    swap = {"missing_field": "extra_field", "extra_field": "missing_field"}
    forward = diff(answer(a), answer(b), CompareRules(max_differences=10_000)).differences
    backward = diff(answer(b), answer(a), CompareRules(max_differences=10_000)).differences
    assert sorted(
        (d.path, swap.get(d.kind, d.kind), d.candidate, d.primary) for d in forward
    ) == sorted((d.path, d.kind, d.primary, d.candidate) for d in backward)


@PROPERTY
@given(st.lists(json_values, min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_a_shuffled_array_is_order_only_or_equal_and_unordered_says_equal(
    items: list[Any], rnd: Any
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert kinds(items, shuffled, unordered=("$",)) == []
    assert kinds(items, shuffled) in ([], [("$", "order_only")])


@PROPERTY
@given(st.lists(st.one_of(keys.map(str), st.integers(0, 99), st.just(Wildcard.ANY)), max_size=5))
def test_paths_round_trip(steps: list[str | int | Wildcard]) -> None:
    assert parse_path(format_path(tuple(steps))) == tuple(steps)
