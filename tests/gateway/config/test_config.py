"""routes.yaml: the valid shape, and every error kind reported with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.validation import ConfigError, parse_duration, parse_size
from gateway.config.shadow import ShadowWorkerSettings
from gateway.config.table import RouteTable
from gateway.config.table import parse as parse_routes

GOOD = b"""\
upstreams:
  legacy: {url: "http://127.0.0.1:8001", timeout: 5s, pool: 10}
  search: {url: "http://search.internal:8002/", timeout: 250ms, connect_timeout: 1s}
default: legacy
max_body: 2MiB
trusted_proxies: [10.0.0.0/8, "::1"]
routes:
  - name: search
    path: /search
    methods: [get]
    upstream: search
  - name: search-writes
    path: /search
    methods: [POST]
    upstream: legacy
  - name: api
    path: /api/
    upstream: legacy
    rewrite: /v2
    max_body: 1KiB
"""


OPEN = b"auth: {default: none}\nauthz: none\n"


def parse(data: bytes, source: str = "routes.yaml") -> RouteTable:
    """Routing tests: the access sections appended, so line numbers stay as written."""
    return parse_routes(data + OPEN, source)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_routes(text.encode() + (OPEN if text else b""), "routes.yaml")
    return [str(i) for i in info.value.issues]


def test_valid_file_parses_into_a_frozen_table() -> None:
    table = parse(GOOD, "routes.yaml")
    assert table.default == "legacy" and table.max_body == 2 * 2**20
    assert table.upstreams["search"].url == "http://search.internal:8002"
    assert table.upstreams["search"].timeout == 0.25
    assert table.upstreams["legacy"].pool == 10
    search = table.routes[0]
    assert search.methods == frozenset({"GET", "HEAD"})
    assert table.routes[2].path == "/api" and table.routes[2].max_body == 1024
    assert table.is_trusted("10.1.2.3") and table.is_trusted("::1")
    assert not table.is_trusted("192.0.2.1") and not table.is_trusted(None)
    with pytest.raises(AttributeError):
        search.upstream = "legacy"  # type: ignore[misc]
    assert len(table.version) == 12


def test_matching_longest_prefix_segments_and_methods() -> None:
    table = parse(GOOD, "routes.yaml")

    def target(path: str, method: str = "GET") -> str | None:
        route = table.match(path, method)
        return route.name if route else None

    assert target("/search") == "search"
    assert target("/search/") == "search"
    assert target("/search/deep/x") == "search"
    assert target("/search", "HEAD") == "search"
    assert target("/search", "POST") == "search-writes"
    assert target("/search", "DELETE") is None  # falls through to the default
    assert target("/searchx") is None
    assert target("/api/v1") == "api"
    assert target("/") is None


def test_longest_prefix_wins_and_root_route() -> None:
    table = parse(
        b'upstreams:\n  a: {url: "http://a"}\n  b: {url: "http://b"}\n  c: {url: "http://c"}\n'
        b"routes:\n  - {name: root, path: /, upstream: a}\n"
        b"  - {name: short, path: /x, upstream: b}\n"
        b"  - {name: long, path: /x/y, upstream: c}\n"
    )
    names = {p: table.match(p, "GET") for p in ("/", "/z", "/x", "/x/y/z", "/x/yz")}
    assert {p: r.name if r else None for p, r in names.items()} == {
        "/": "root",
        "/z": "root",
        "/x": "short",
        "/x/y/z": "long",
        "/x/yz": "short",
    }


def test_forward_path_rewrites_the_matched_prefix() -> None:
    table = parse(GOOD)
    api = table.routes[2]
    assert api.forward_path("/api") == "/v2"
    assert api.forward_path("/api/items/1") == "/v2/items/1"
    strip = parse(
        b'upstreams:\n  a: {url: "http://a"}\n'
        b"routes:\n  - {name: s, path: /svc, upstream: a, strip_prefix: true}\n"
    ).routes[0]
    assert strip.forward_path("/svc") == "/"
    assert strip.forward_path("/svc/x/") == "/x/"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("upstreams: {}\n", ["line 1: upstreams: define at least one upstream"]),
        ("routes: []\n", ["line 1: missing 'upstreams'"]),
        (
            "upstreams:\n  a: {url: 'http://a'}\ncolour: red\n",
            ["line 3: routes file: unknown key 'colour'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\n  a: {url: 'http://b'}\n",
            ["line 3: upstreams: duplicate key 'a'"],
        ),
        (
            "upstreams:\n  a: {url: 'ftp://a'}\n",
            ["line 2: upstream 'a': url: 'ftp://a' is not an http(s) URL"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a/x'}\n",
            ["line 2: upstream 'a': url: 'http://a/x': give only"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a:99999'}\n",
            ["line 2: upstream 'a': url: 'http://a:99999'"],
        ),
        (
            "upstreams:\n  a:\n    url: http://a\n    timeout: 5 parsecs\n",
            ["line 4: upstream 'a': timeout: bad duration"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a', pool: 0}\n",
            ["line 2: upstream 'a': pool: '0' must be a positive"],
        ),
        ("upstreams:\n  a: {}\n", ["line 2: upstream 'a': missing 'url'"]),
        (
            "upstreams:\n  a: {url: 'http://a'}\ndefault: b\n",
            ["line 3: default: unknown upstream 'b'"],
        ),
        ("upstreams:\n  a: {url: 'http://a'}\nmax_body: lots\n", ["line 3: max_body: bad size"]),
        (
            "upstreams:\n  a: {url: 'http://a'}\ntrusted_proxies: [nothing]\n",
            ["line 3: trusted_proxies: 'nothing' is not"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: b}\n",
            ["line 4: route 'r': unknown upstream 'b'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: r, upstream: a}\n",
            ["line 4: route 'r': path: 'r' must start with '/'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /a/../b, upstream: a}\n",
            ["line 4: route 'r': path: '/a/../b' is not in normal form"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r}\n",
            ["line 4: route: missing 'upstream'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: a, wat: 1}\n",
            ["line 4: route: unknown key 'wat'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: a, methods: [FETCH]}\n",
            ["line 4: route 'r': unknown method 'FETCH'"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: a}\n  - {name: r, path: /s, upstream: a}\n",
            ["line 5: duplicate route name 'r' (first on line 4)"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: a}\n  - {name: s, path: /r/, upstream: a, methods: [GET]}\n",
            ["line 5: route 's' overlaps route 'r' (line 4)"],
        ),
        (
            "upstreams:\n  a: {url: 'http://a'}\nroutes:\n  - {name: r, path: /r, upstream: a, rewrite: /x, strip_prefix: true}\n",
            ["line 4: route 'r': use either 'rewrite' or 'strip_prefix'"],
        ),
        ("upstreams:\n  a: {url: 'http://a'}\nroutes: {r: 1}\n", ["line 3: routes must be a list"]),
        ("upstreams: [\n", ["invalid YAML"]),
        ("", ["line 1: the file is empty"]),
    ],
)
def test_each_error_kind_is_reported_with_its_line(text: str, expected: list[str]) -> None:
    errors = errors_of(text)
    assert len(errors) == len(expected), errors
    for got, want in zip(errors, expected, strict=True):
        assert want in got


def test_every_error_is_reported_not_just_the_first() -> None:
    errors = errors_of(
        "upstreams:\n"
        "  a: {url: 'ftp://a', timeout: forever}\n"
        "default: nowhere\n"
        "routes:\n"
        "  - {name: r, path: r, upstream: b}\n"
        "  - {name: r, path: /s, upstream: a, bogus: 1}\n"
    )
    lines = [e.split(":")[0] for e in errors]
    assert lines == ["line 2", "line 2", "line 3", "line 5", "line 5", "line 6", "line 6"]


def test_units() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("2m") == 120
    assert parse_duration("1.5") == 1.5
    assert parse_size("1KiB") == 1024 and parse_size("3MB") == 3_000_000 and parse_size("7") == 7
    for bad in ("", "5 parsecs", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "routes", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_routes_check_prints_the_table_or_every_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_bytes(GOOD + OPEN)
    ok = run_check(good)
    assert ok.returncode == 0, ok.stderr
    rows = [line.split() for line in ok.stdout.splitlines()[1:]]
    assert rows == [
        ["ROUTE", "PATH", "METHODS", "AUTH", "UPSTREAM", "FORWARDS", "TO"],
        ["search", "/search", "GET,HEAD", "none", "search", "http://search.internal:8002/search"],
        ["search-writes", "/search", "POST", "none", "legacy", "http://127.0.0.1:8001/search"],
        ["api", "/api", "*", "none", "legacy", "http://127.0.0.1:8001/v2"],
        ["(default)", "/", "*", "none", "legacy", "http://127.0.0.1:8001"],
        ["STATE", "ROUTE", "TARGETS", "PROMOTE"],
        ["migrated", "search", "search", "-"],
        ["legacy", "search-writes", "legacy", "-"],
        ["legacy", "api", "legacy", "-"],
        ["authz:", "none"],
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstreams:\n  a: {url: nope}\nroutes:\n  - {name: r, path: /r, upstream: x}\n"
        + OPEN.decode()
    )
    failed = run_check(bad)
    assert failed.returncode == 1
    assert f"{bad}:2: upstream 'a': url:" in failed.stderr
    assert f"{bad}:4: route 'r': unknown upstream 'x'" in failed.stderr
    missing = run_check(tmp_path / "absent.yaml")
    assert missing.returncode == 1 and "cannot read" in missing.stderr


SHADOWED = b"""\
upstreams:
  legacy: {url: "http://legacy"}
  search: {url: "http://search"}
routes:
  - name: search
    path: /search
    upstream: legacy
    shadow:
      upstream: search
      sample: 25%
      max_body: 64KiB
      timeout: 500ms
      compare:
        ignore: [$.took_ms, "$.results[*].score"]
        unordered: [$.results]
        numeric_tolerance: 0.01
        headers: [Content-Type, ETag]
        normalise: [timestamps]
      noise: auto
      redact: [$.email]
shadow_store: {url: "sqlite:///tmp/shadow.db", retain: 500, max_age: 2d}
"""


def test_shadow_block_parses_into_compare_rules() -> None:
    table = parse(SHADOWED)
    shadow = table.routes[0].shadow
    assert shadow is not None
    assert (shadow.upstream, shadow.sample, shadow.max_body, shadow.timeout) == (
        "search",
        0.25,
        64 * 1024,
        0.5,
    )
    assert shadow.methods == {"GET", "HEAD"} and shadow.noise
    assert shadow.compare.ignore == ("$.took_ms", "$.results[*].score")
    assert shadow.compare.headers == ("content-type", "etag")
    assert shadow.redact == ("$.email",)
    assert (table.shadow_store.retain, table.shadow_store.max_age) == (500, 2 * 86400)


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        (
            b"upstream: search\n      sample",
            b"upstream: nowhere\n      sample",
            "line 9: route 'search': shadow: unknown upstream 'nowhere'",
        ),
        (
            b"sample: 25%",
            b"sample: 125%",
            "line 10: route 'search': shadow: sample: '125%' must be between 0 and 1",
        ),
        (
            b"noise: auto",
            b"methods: [GET, POST]",
            "line 19: route 'search': shadow: POST change data; mirroring them needs writes: true",
        ),
        (
            b"[$.took_ms,",
            b"[took_ms,",
            "line 14: route 'search': shadow: compare: ignore: JSON path 'took_ms' must start with '$'",
        ),
        (
            b"normalise: [timestamps]",
            b"normalise: [dates]",
            "line 18: route 'search': shadow: compare: normalise must be one of",
        ),
        (b"sqlite:///tmp/shadow.db", b"mysql://x", "line 21: shadow_store: url must be sqlite"),
    ],
)
def test_shadow_errors(replace: bytes, by: bytes, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(SHADOWED.replace(replace, by))
    assert any(expected in str(i) for i in info.value.issues), info.value.issues


def test_routes_check_warns_about_mirrored_writes(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_bytes(
        SHADOWED.replace(b"noise: auto", b"methods: [GET, POST]\n      writes: true") + OPEN
    )
    checked = run_check(routes)
    assert checked.returncode == 0, checked.stderr
    assert "shadow: search -> search (25% of GET,POST)" in checked.stdout
    assert "mirrors writes" in checked.stderr


def test_shadow_worker_defaults_and_settings() -> None:
    assert parse(SHADOWED).shadow_worker == ShadowWorkerSettings(
        "process", 64, 4 * 1024**2, 19, idle=True, busy_limit=0.8
    )
    table = parse(
        SHADOWED + b"shadow_worker: {mode: inline, concurrency: 8, buffer: 1MiB, nice: 0,"
        b" idle: false, busy_limit: 95%}\n"
    )
    assert table.shadow_worker == ShadowWorkerSettings(
        "inline", 8, 1024**2, 0, idle=False, busy_limit=0.95
    )


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        ("{mode: thread}", "line 22: shadow_worker: mode must be one of process, inline"),
        ("{concurrency: 0}", "line 22: shadow_worker: concurrency: '0' must be a positive"),
        ("{buffer: 1KiB}", "line 22: shadow_worker: buffer: '1KiB' is too small"),
        ("{nice: 20}", "line 22: shadow_worker: nice: '20' must be from 0"),
        ("{idle: yes}", "line 22: shadow_worker: idle must be one of true, false"),
        ("{busy_limit: 120%}", "line 22: shadow_worker: busy_limit: '120%' must be between"),
        ("{workers: 2}", "line 22: shadow_worker: unknown key 'workers'"),
    ],
)
def test_shadow_worker_errors(worker: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(SHADOWED + f"shadow_worker: {worker}\n".encode())
    assert any(expected in str(i) for i in info.value.issues), info.value.issues
