"""The auth and authz sections of routes.yaml, and `strangler token`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from common.validation import ConfigError
from gateway.config.table import parse

UPSTREAMS = b'upstreams:\n  a: {url: "http://a"}\ndefault: a\n'
SECRET = "0123456789abcdef0123456789abcdef"


def errors(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(UPSTREAMS + text.encode(), str(tmp_path / "routes.yaml"))
    return [str(i) for i in info.value.issues]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("authz: none\n", "line 1: missing 'auth'"),
        ("auth: {default: none}\n", "line 1: missing 'authz'"),
        ("auth: {}\nauthz: none\n", "line 4: auth: give keys or jwks"),
        ("auth: {default: maybe}\nauthz: none\n", "auth: default must be one of required"),
        (
            f'auth:\n  keys: [{{id: k, algorithm: HS256, secret: "{SECRET}"}}, '
            f'{{id: k, algorithm: HS256, secret: "{SECRET}"}}]\nauthz: none\n',
            "key id 'k' is used twice",
        ),
        (
            "auth:\n  keys: [{id: k, algorithm: HS256, secret: short}]\nauthz: none\n",
            "at least 32 bytes",
        ),
        (
            "auth:\n  keys: [{id: k, algorithm: HS256, public_key_file: k.pem}]\nauthz: none\n",
            "HS256 needs a secret",
        ),
        (
            f'auth:\n  keys: [{{id: k, algorithm: RS256, secret: "{SECRET}"}}]\nauthz: none\n',
            "RS256 needs a public_key_file",
        ),
        (
            "auth:\n  keys: [{id: k, algorithm: none, secret: x}]\nauthz: none\n",
            "algorithm must be one of",
        ),
        (
            "auth:\n  keys: [{id: k, algorithm: RS256, public_key_file: missing.pem}]\nauthz: none\n",
            "cannot read",
        ),
        (
            "auth:\n  keys: [{id: k, algorithm: HS256, secret_env: NOT_SET_ANYWHERE}]\nauthz: none\n",
            "'NOT_SET_ANYWHERE' is not set",
        ),
        ("auth:\n  jwks: {url: https://id/jwks}\nauthz: none\n", "list the accepted algorithms"),
        (
            "auth:\n  jwks: {url: ftp://id, algorithms: [RS256]}\nauthz: none\n",
            "url must be an http(s) URL",
        ),
        ("auth: {default: none}\nauthz: {engine: opa}\n", "the opa engine needs an http(s) url"),
        (
            "auth: {default: none}\nauthz: {engine: embedded, policies: nowhere}\n",
            "is not a directory",
        ),
        ("auth: {default: none}\nauthz: {engine: magic}\n", "engine must be one of embedded, opa"),
        ("auth: {default: none}\nauthz: {}\n", "missing 'engine'"),
        (
            "auth: {default: none}\nauthz: none\nroutes:\n  - {name: r, path: /r, upstream: a, auth: sometimes}\n",
            "route 'r': auth must be one of",
        ),
        (
            "auth: {default: none}\nauthz: none\nroutes:\n  - {name: r, path: /r, upstream: a, authz_failure: maybe}\n",
            "authz_failure must be one of closed, open",
        ),
    ],
)
def test_access_errors(text: str, expected: str, tmp_path: Path) -> None:
    found = errors(text, tmp_path)
    assert any(expected in e for e in found), found


def test_dev_keys_are_refused_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f'auth:\n  keys: [{{id: dev, algorithm: HS256, secret: "{SECRET}", dev: true}}]\nauthz: none\n'
    assert parse(UPSTREAMS + text.encode(), str(tmp_path / "r.yaml")).auth.keys[0].dev
    monkeypatch.setenv("STRANGLER_ENV", "production")
    assert any("refused when STRANGLER_ENV=production" in e for e in errors(text, tmp_path))


def test_valid_access_sections(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.rego").write_text("package strangler.authz\n")
    table = parse(
        UPSTREAMS
        + f"auth:\n  default: optional\n  issuer: me\n  audience: you\n  leeway: 10s\n"
        f'  keys: [{{id: k, algorithm: HS512, secret: "{SECRET}"}}]\n'
        "  jwks: {url: 'https://id/jwks', algorithms: [RS256, ES256], cache: 5m}\n"
        "authz: {engine: embedded, policies: policies, cache: off}\n"
        "routes:\n  - {name: r, path: /r, upstream: a, auth: none, authz_failure: open}\n".encode(),
        str(tmp_path / "routes.yaml"),
    )
    assert (table.auth.default, table.auth.issuer, table.auth.leeway) == ("optional", "me", 10.0)
    assert table.auth.jwks is not None and table.auth.jwks.algorithms == {"RS256", "ES256"}
    assert table.auth.jwks.cache == 300
    assert table.authz is not None and table.authz.cache_ttl == 0
    assert table.authz.policies == tmp_path / "policies"
    route = table.routes[0]
    assert (table.auth_mode(route), route.authz_failure) == ("none", "open")
    assert table.auth_mode(None) == "optional"


def strangler_token(routes: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "token",
            "--routes",
            str(routes),
            "--sub",
            "alice",
            "--roles",
            "admin,buyer",
            "--ttl",
            "10m",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )


def test_strangler_token_mints_with_the_dev_key_and_refuses_in_production(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_bytes(
        UPSTREAMS
        + f'auth:\n  issuer: me\n  keys: [{{id: dev, algorithm: HS256, secret: "{SECRET}", dev: true}}]\n'
        "authz: none\n".encode()
    )
    minted = strangler_token(routes, {})
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"], issuer="me")
    assert (claims["sub"], claims["roles"]) == ("alice", ["admin", "buyer"])
    assert 590 <= claims["exp"] - claims["iat"] <= 600
    refused = strangler_token(routes, {"STRANGLER_ENV": "production"})
    assert refused.returncode == 1 and "refused" in refused.stderr and refused.stdout == ""
