"""The access-control sections of routes.yaml: `auth` (who are you) and `authz` (may you).

    auth:
      default: required        # required | optional | none, for routes that do not say
      issuer: https://id.example.com     # exact match when set
      audience: shop                     # exact match when set
      leeway: 30s                        # for exp, nbf, iat
      roles_claim: roles
      cache_size: 10000                  # verified tokens kept until their exp; 0: none
      keys:                              # each key: one id, one algorithm
        - {id: dev, algorithm: HS256, secret: "dev-only-secret", dev: true}
        - {id: main, algorithm: RS256, public_key_file: keys/main.pem}
      jwks: {url: https://id.example.com/jwks.json, algorithms: [RS256], cache: 10m,
             min_refresh: 30s, timeout: 2s}
    authz:                               # or `authz: none`: no policy check at all
      engine: embedded                   # embedded (regopy, in-process) | opa (REST Data API)
      policies: policies                 # embedded: the .rego directory
      url: http://127.0.0.1:8181         # opa: the server
      package: strangler/authz
      timeout: 250ms
      cache: 5s                          # decision cache lifetime; 0 turns it off
      cache_size: 10000

Both sections are required: a gateway that does not say how it authenticates and
authorises is a configuration error, not an open door. Relative file paths are relative to
the routes file. With `STRANGLER_ENV=production`, a key marked `dev: true` is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node, ScalarNode

from common.validation import NodeReader, non_negative_int, parse_duration, positive_int

AUTH_MODES = ("required", "optional", "none")
ENGINES = ("embedded", "opa")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class StaticKey:
    id: str  # matched against the token's `kid` when it has one
    algorithm: str
    material: str | bytes  # an HMAC secret (bytes) or a PEM public key (str)
    dev: bool = False  # the development key `strangler token` signs with


@dataclass(frozen=True, slots=True)
class JwksSource:
    url: str
    algorithms: frozenset[str]
    cache: float = 600.0
    min_refresh: float = 30.0
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class AuthSettings:
    default: str = "required"  # required | optional | none, for routes that do not say
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 30.0
    roles_claim: str = "roles"
    keys: tuple[StaticKey, ...] = ()
    jwks: JwksSource | None = None
    cache_size: int = 10_000


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    engine: str
    policies: Path | None = None
    url: str | None = None
    package: str = "strangler/authz"
    timeout: float = 0.25
    cache_ttl: float = 5.0
    cache_size: int = 10_000


def read_auth(reader: NodeReader, node: Node, base: Path) -> AuthSettings | None:
    fields = reader.mapping(
        node,
        "auth",
        {"default", "issuer", "audience", "leeway", "roles_claim", "keys", "jwks", "cache_size"},
    )
    if fields is None:
        return None
    default = "required"
    if "default" in fields:
        default = reader.choice(fields["default"], "auth: default", AUTH_MODES) or default
    keys: list[StaticKey] = []
    for item in reader.sequence(fields["keys"], "auth: keys") if "keys" in fields else []:
        key = _key(reader, item, base)
        if key is not None and any(k.id == key.id for k in keys):
            reader.error(item, f"auth: key id {key.id!r} is used twice")
        elif key is not None:
            keys.append(key)
    jwks = _jwks(reader, fields["jwks"]) if "jwks" in fields else None
    if default != "none" and not keys and jwks is None and "keys" not in fields:
        reader.error(node, "auth: give keys or jwks, or set default: none to serve without tokens")
    settings = AuthSettings(
        default=default,
        issuer=reader.scalar(fields["issuer"], "auth: issuer") if "issuer" in fields else None,
        audience=reader.scalar(fields["audience"], "auth: audience")
        if "audience" in fields
        else None,
        leeway=reader.optional(fields, "leeway", "auth", parse_duration, 30.0),
        roles_claim=reader.scalar(fields["roles_claim"], "auth: roles_claim") or "roles"
        if "roles_claim" in fields
        else "roles",
        keys=tuple(keys),
        jwks=jwks,
        cache_size=reader.optional(fields, "cache_size", "auth", non_negative_int, 10_000),
    )
    return settings


def _key(reader: NodeReader, node: Node, base: Path) -> StaticKey | None:
    fields = reader.mapping(
        node, "auth key", {"id", "algorithm", "secret", "secret_env", "public_key_file", "dev"}
    )
    if fields is None:
        return None
    for required in ("id", "algorithm"):
        if required not in fields:
            reader.error(node, f"auth key: missing {required!r}")
    key_id = reader.scalar(fields["id"], "auth key: id") if "id" in fields else None
    what = f"auth key {key_id!r}"
    algorithm = None
    if "algorithm" in fields:
        algorithm = reader.choice(
            fields["algorithm"],
            f"{what}: algorithm",
            tuple(sorted(HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS)),
        )
    sources = [k for k in ("secret", "secret_env", "public_key_file") if k in fields]
    if len(sources) != 1:
        reader.error(node, f"{what}: give exactly one of secret, secret_env, public_key_file")
        return None
    source = sources[0]
    value_node = fields[source]
    material: str | bytes | None = None
    if algorithm in HMAC_ALGORITHMS and source == "public_key_file":
        reader.error(value_node, f"{what}: {algorithm} needs a secret, not a public key")
    elif algorithm in PUBLIC_KEY_ALGORITHMS and source != "public_key_file":
        reader.error(value_node, f"{what}: {algorithm} needs a public_key_file, not a secret")
    elif source == "secret":
        material = (reader.scalar(value_node, f"{what}: secret") or "").encode()
    elif source == "secret_env":
        name = reader.scalar(value_node, f"{what}: secret_env") or ""
        material = os.environ.get(name, "").encode()
        if not material:
            reader.error(value_node, f"{what}: environment variable {name!r} is not set")
    else:
        material = reader.converted(
            value_node, f"{what}: public_key_file", lambda p: _pem(base / p)
        )
    if isinstance(material, bytes) and material and len(material) < 32:
        reader.error(value_node, f"{what}: an HMAC secret needs at least 32 bytes (RFC 7518 3.2)")
    dev = False
    if "dev" in fields:
        dev = reader.choice(fields["dev"], f"{what}: dev", ("true", "false")) == "true"
        if dev and os.environ.get("STRANGLER_ENV") == "production":
            reader.error(
                fields["dev"], f"{what}: development keys are refused when STRANGLER_ENV=production"
            )
    if key_id is None or algorithm is None or not material:
        return None
    return StaticKey(key_id, algorithm, material, dev)


def _pem(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if "-----BEGIN PUBLIC KEY-----" not in text and "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{str(path)!r} is not a PEM public key")
    return text


def _jwks(reader: NodeReader, node: Node) -> JwksSource | None:
    fields = reader.mapping(
        node, "auth: jwks", {"url", "algorithms", "cache", "min_refresh", "timeout"}
    )
    if fields is None:
        return None
    url = reader.scalar(fields["url"], "auth: jwks: url") if "url" in fields else None
    if url is None or not url.startswith(("https://", "http://")):
        reader.error(node, "auth: jwks: url must be an http(s) URL")
    algorithms: set[str] = set()
    for item in (
        reader.sequence(fields["algorithms"], "auth: jwks: algorithms")
        if "algorithms" in fields
        else []
    ):
        algorithm = reader.choice(
            item, "auth: jwks: algorithm", tuple(sorted(PUBLIC_KEY_ALGORITHMS))
        )
        if algorithm:
            algorithms.add(algorithm)
    if not algorithms:
        reader.error(node, "auth: jwks: list the accepted algorithms (e.g. [RS256])")
    if url is None or not algorithms:
        return None
    return JwksSource(
        url=url,
        algorithms=frozenset(algorithms),
        cache=reader.optional(fields, "cache", "auth: jwks", parse_duration, 600.0),
        min_refresh=reader.optional(fields, "min_refresh", "auth: jwks", parse_duration, 30.0),
        timeout=reader.optional(fields, "timeout", "auth: jwks", parse_duration, 2.0),
    )


def read_authz(reader: NodeReader, node: Node, base: Path) -> AuthzSettings | None:
    """None means `authz: none`: no policy check."""
    if isinstance(node, ScalarNode) and node.value == "none":
        return None
    fields = reader.mapping(
        node, "authz", {"engine", "policies", "url", "package", "timeout", "cache", "cache_size"}
    )
    if fields is None:
        return None
    engine = (
        reader.choice(fields["engine"], "authz: engine", ENGINES) if "engine" in fields else None
    )
    if "engine" not in fields:
        reader.error(node, "authz: missing 'engine' (embedded or opa), or write authz: none")
    policies = url = None
    if engine == "embedded":
        name = (
            reader.scalar(fields["policies"], "authz: policies")
            if "policies" in fields
            else "policies"
        )
        policies = base / (name or "policies")
        if not policies.is_dir():
            reader.error(
                fields.get("policies", node),
                f"authz: policies: {str(policies)!r} is not a directory",
            )
    elif engine == "opa":
        url = reader.scalar(fields["url"], "authz: url") if "url" in fields else None
        if url is None or not url.startswith(("http://", "https://")):
            reader.error(fields.get("url", node), "authz: the opa engine needs an http(s) url")
    return AuthzSettings(
        engine=engine or "embedded",
        policies=policies,
        url=url,
        package=(reader.scalar(fields["package"], "authz: package") or "strangler/authz")
        if "package" in fields
        else "strangler/authz",
        timeout=reader.optional(fields, "timeout", "authz", parse_duration, 0.25),
        cache_ttl=reader.optional(fields, "cache", "authz", _duration_or_off, 5.0),
        cache_size=reader.optional(fields, "cache_size", "authz", positive_int, 10_000),
    )


def _duration_or_off(text: str) -> float:
    return 0.0 if text in ("off", "0") else parse_duration(text)
