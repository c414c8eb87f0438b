"""The `edge:` section of routes.yaml: values, defaults and every error with its line."""

from __future__ import annotations

import pytest

from common.validation import ConfigError
from gateway.config.edge import EdgeSettings
from gateway.config.table import parse

HEAD = (
    'upstreams:\n  a: {url: "http://127.0.0.1:9"}\ndefault: a\nauth: {default: none}\nauthz: none\n'
)


def test_the_section_parses_into_frozen_settings() -> None:
    text = (
        "edge:\n  max_request_line: 4KiB\n  max_header_bytes: 16KiB\n  max_headers: 50\n"
        "  header_timeout: 5s\n  idle_timeout: 1m\n  body_timeout: 250ms\n"
        "  body_buffer: 1MiB\n  max_connections: 100\n  admin_headroom: 0\n"
    )
    edge = parse((HEAD + text).encode()).edge
    assert edge == EdgeSettings(4096, 16384, 50, 5.0, 60.0, 0.25, 1 << 20, 100, 0)
    with pytest.raises(AttributeError):
        edge.max_headers = 1  # type: ignore[misc]


def test_without_the_section_the_defaults_hold() -> None:
    assert parse(HEAD.encode()).edge == EdgeSettings()


def test_each_error_is_reported_with_its_line() -> None:
    text = (
        "edge:\n  max_request_line: 1MiB\n  max_headers: 0\n  header_timeout: 0s\n"
        "  body_buffer: lots\n  max_conections: 10\n"
    )
    with pytest.raises(ConfigError) as info:
        parse((HEAD + text).encode(), "routes.yaml")
    messages = [str(issue) for issue in info.value.issues]
    assert messages == [
        "line 7: edge: max_request_line cannot be larger than max_header_bytes",
        "line 8: edge: max_headers: '0' must be a positive integer",
        "line 9: edge: header_timeout: '0s' must be longer than 0",
        "line 10: edge: body_buffer: bad size 'lots' (use e.g. 512KiB, 10MiB, 1048576)",
        "line 11: edge: unknown key 'max_conections' (expected one of: admin_headroom, "
        "body_buffer, body_timeout, header_timeout, idle_timeout, max_connections, "
        "max_header_bytes, max_headers, max_request_line)",
    ]
