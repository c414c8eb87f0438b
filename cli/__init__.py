"""The `strangler` command: parse arguments, call the core, format the result.

Subcommands that belong to another package (`monolith`, `search`, `cdc`, `bench`) hand
their remaining arguments to that package's own `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

_DELEGATES: dict[str, tuple[str, str]] = {
    "monolith": ("legacy_monolith.manage:main", "the legacy monolith: migrate | seed | serve"),
    "search": ("new_services.search.manage:main", "the search service: migrate | backfill | serve"),
    "cdc": ("cdc.__main__:main", "the CDC bridge: Debezium events from Kafka -> search database"),
    "bench": ("bench.__main__:main", "benchmarks against reference systems: proxy"),
}


def _delegate(target: str, argv: list[str]) -> int:
    module_name, _, attr = target.partition(":")
    main: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), attr)
    return main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _DELEGATES:
        return _delegate(_DELEGATES[args[0]][0], args[1:])

    parser = argparse.ArgumentParser(prog="strangler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in _DELEGATES.items():
        sub.add_parser(name, help=help_text, add_help=False)

    # Before anything else of the gateway's, and so before any C++ extension module: it
    # decides which C++ allocator regopy and the rest of a gateway process share
    # (gateway/identity/rego.py; issue #16). The command modules import the gateway.
    import gateway.identity.rego  # noqa: F401
    from cli import demo, routes, shadow, token
    from cli import gateway as gateway_command
    from gateway.config.settings import Settings

    settings = Settings.from_env()
    # One module (or package) of cli/ per command of the gateway's own, each with its
    # `register`: cli/routes/ (check, diff, promote, rollback), gateway.py, token.py, ...
    for command in (routes, gateway_command, token, shadow, demo):  # in `--help`'s order
        command.register(sub, settings)
    ns = parser.parse_args(args)
    handler: Callable[[argparse.Namespace], int] = ns.handler
    return handler(ns)


if __name__ == "__main__":
    raise SystemExit(main())
