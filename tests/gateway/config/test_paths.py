"""Path normalisation: one normal form, or a 400."""

from __future__ import annotations

import pytest

from gateway.config.paths import PathError, normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/search", "/search"),
        ("/search/", "/search/"),
        ("//search//x", "/search/x"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/../c", "/a/c"),
        ("/a/.", "/a/"),
        ("/%7Euser/%41%62", "/~user/Ab"),
        ("/a%2a%3d", "/a%2A%3D"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ("/file.tar.gz", "/file.tar.gz"),
        ("/...", "/..."),
        ("/a/%2E%2Eb", "/a/..b"),
        ("/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,="),
    ],
)
def test_normal_forms(raw: str, expected: str) -> None:
    assert normalise(raw.encode()) == expected
    assert normalise(expected.encode()) == expected  # idempotent


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/a/%2F", "encoded '/'"),
        ("/a/%2f", "encoded '/'"),
        ("/a/%5C", "encoded '/' or '\\'"),
        ("/a/%00", "control"),
        ("/a/%0A", "control"),
        ("/a/\x01", "control"),
        ("/%2e%2e/x", "encoded dot"),
        ("/a/%2e/b", "encoded dot"),
        ("/a/.%2e", "encoded dot"),
        ("/..", "above the root"),
        ("/a/../..", "above the root"),
        ("/a;b", "';'"),
        ("/a%3Bb", "encoded ';'"),
        ("/a/%", "percent"),
        ("/a/%g1", "percent"),
        ("/a\\b", "'\\'"),
        ("a/b", "start with '/'"),
        ("*", "start with '/'"),
    ],
)
def test_rejections(raw: str, reason: str) -> None:
    with pytest.raises(PathError) as info:
        normalise(raw.encode("utf-8"))
    assert reason in info.value.detail
