"""The environment docker compose gives a service, read from the compose file.

`strangler demo --against URL` signs its tokens with the key the stack's gateway uses. In
the compose stack that key is not in the routes file: the file says `secret_env:
STRANGLER_DEV_HS256_SECRET` and docker-compose.yml sets the variable in the gateway's
environment (`${STRANGLER_DEV_HS256_SECRET:-...}`, overridable from `.env`). So the
variables a routes file names (`secret_env:`, `positions_env:`, every `*_env:` key; the
file is loaded, and so checked, before the demo edits it) that this process's environment
lacks are taken from the compose file, as compose computes them: a service's
`environment:` value, interpolated from the shell's environment first and the project's
`.env` (next to the compose file) second (compose's precedence), in the forms `${NAME}`,
`${NAME:-default}` (unset or empty), `${NAME-default}` (unset), `$NAME` and `$$` (a dollar
sign).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_REFERENCE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


def find_compose(start: Path) -> Path | None:
    """The compose file in `start` or the nearest directory above it (compose's own search)."""
    for directory in (start, *start.parents):
        for name in COMPOSE_FILES:
            if (directory / name).is_file():
                return directory / name
    return None


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        dollar, name, operator, default, bare = match.groups()
        if dollar:
            return "$"
        if bare:
            return variables.get(bare, "")
        found = variables.get(name)
        if operator == ":-" and not found:
            return str(default)
        if operator == "-" and found is None:
            return str(default)
        return found or ""

    return _REFERENCE.sub(value, text)


def read_dotenv(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a .env file (comments and blank lines skipped, quotes removed)."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name and not name.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def service_value(compose: Path, name: str, environ: Mapping[str, str]) -> str | None:
    """What compose sets `name` to in the first service whose `environment:` names it."""
    document = yaml.safe_load(compose.read_text()) or {}
    variables = {**read_dotenv(compose.parent / ".env"), **environ}
    for service in (document.get("services") or {}).values():
        environment = (service or {}).get("environment") or {}
        if isinstance(environment, list):
            environment = dict(str(item).partition("=")[::2] for item in environment)
        if name in environment and environment[name] is not None:
            return interpolate(str(environment[name]), variables)
    return None


def variable_names(routes: Path) -> list[str]:
    """Every variable a routes file names in a `*_env:` key, in file order."""
    return list(dict.fromkeys(_variables(yaml.safe_load(routes.read_text()))))


def _variables(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                yield value
            else:
                yield from _variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from _variables(item)


def fill(routes: Path, compose: Path | None, environ: MutableMapping[str, str]) -> list[str]:
    """Set in `environ` the routes file's `*_env:` names it lacks, from the compose file;
    return the names set."""
    filled = []
    for name in variable_names(routes):
        if environ.get(name) or compose is None:
            continue
        value = service_value(compose, name, environ)
        if value:
            environ[name] = value
            filled.append(name)
    return filled
