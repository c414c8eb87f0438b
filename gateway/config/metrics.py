"""The `metrics:` section of routes.yaml: where `GET /metrics` is served and who may read it.

metrics:
  path: /metrics            # the default; the gateway answers it itself, never an upstream
  access: policy            # policy | token | open | off
  token_env: STRANGLER_METRICS_TOKEN   # access: token reads the scrape token from here

- `policy` (the default, closed): like `/_strangler/*`, the request is authenticated with the
  file's `auth.default` mode and the policy decides; its input has `route: "_metrics"`
  (a name no route in the file can have) and `target: "gateway"`. The bundled policy admits
  the roles `admin` and `metrics`. With `authz: none`, whoever `auth.default` admits, as for
  `/_strangler/*`.
- `token`: a static bearer token (at least 32 characters) from the environment variable
  `token_env`, for scrapers that cannot mint JWTs (Prometheus' `authorization:
  credentials_file`). Compared in constant time.
- `open`: anyone who reaches the port; only behind a network boundary.
- `off`: the gateway does not answer the path; it is routed like any other.

A route whose path is the metrics path is an error (the route would never be reached): move
one of them, or say `access: off`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from yaml.nodes import Node

from common.validation import ConfigIssue, NodeReader
from gateway.config.paths import configured

ACCESS_MODES = ("policy", "token", "open", "off")
METRICS_ROUTE = "_metrics"  # the route name the policy sees; routes.yaml names start [A-Za-z0-9]
MIN_TOKEN = 32


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    path: str | None = "/metrics"  # None: access off, the path is routed like any other
    access: str = "policy"
    token: bytes = field(default=b"", repr=False)  # access: token


def read_metrics(
    reader: NodeReader, node: Node | None, route_paths: dict[str, tuple[str, int]]
) -> MetricsSettings:
    """`node`: the section, None when the file has none; `route_paths`: path -> (name, line)."""
    settings = _settings(reader, node) if node is not None else MetricsSettings()
    taken = route_paths.get(settings.path) if settings.path is not None else None
    if taken is not None:
        name, line = taken
        reader.issues.append(
            ConfigIssue(
                line,
                f"route {name!r}: path {settings.path!r} is the gateway's metrics endpoint; "
                "give metrics a different path, or say metrics: {access: off}",
            )
        )
    return settings


def _settings(reader: NodeReader, node: Node) -> MetricsSettings:
    fields = reader.mapping(node, "metrics", {"path", "access", "token_env"})
    if fields is None:
        return MetricsSettings()
    access = "policy"
    if "access" in fields:
        access = reader.choice(fields["access"], "metrics: access", ACCESS_MODES) or "policy"
    path = reader.optional(fields, "path", "metrics", _path, "/metrics")
    token = b""
    if access == "token":
        if "token_env" not in fields:
            reader.error(node, "metrics: access: token needs token_env (an environment variable)")
        else:
            name = reader.scalar(fields["token_env"], "metrics: token_env") or ""
            token = os.environ.get(name, "").encode()
            if not token:
                reader.error(
                    fields["token_env"], f"metrics: environment variable {name!r} is not set"
                )
            elif len(token) < MIN_TOKEN:
                reader.error(
                    fields["token_env"],
                    f"metrics: the token in {name!r} needs at least {MIN_TOKEN} characters",
                )
    elif "token_env" in fields:
        reader.error(fields["token_env"], "metrics: token_env is used only with access: token")
    return MetricsSettings(None if access == "off" else path, access, token)


def _path(text: str) -> str:
    path = configured(text)  # matched exactly, a trailing slash included
    if path.startswith("/_strangler/"):
        raise ValueError(f"{text!r} is inside the admin API /_strangler/")
    return path
