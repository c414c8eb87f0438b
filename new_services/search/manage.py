"""`strangler search migrate | backfill | serve`, also callable as plain functions.

Every subcommand takes `--database-url`, defaulting to the SEARCH_DATABASE_URL setting.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from new_services.search import backfill as copying
from new_services.search import schema
from new_services.search.asgi import create_app
from new_services.search.settings import settings


def migrate(database_url: str | None = None) -> str:
    """Upgrade the schema to head (idempotent, safe from concurrent replicas); return head."""
    return schema.migrate(database_url or settings().database_url)


def backfill(source_url: str, target_url: str | None = None) -> int:
    """Copy the monolith's products into search documents; return how many were copied."""
    return copying.backfill(source_url, target_url or settings().database_url)


def serve(
    database_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8002,
    dev_toggles: bool = False,
) -> None:
    uvicorn.run(
        create_app(database_url, dev_toggles),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strangler search", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=None, help="default: $SEARCH_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", parents=[common], help="upgrade the schema to head")
    copy = sub.add_parser("backfill", parents=[common], help="copy the monolith's products")
    copy.add_argument("--from-database-url", required=True, help="the monolith's database")
    serving = sub.add_parser("serve", parents=[common], help="run the HTTP server")
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=8002)
    serving.add_argument(
        "--dev-toggles",
        action="store_true",
        help="DEVELOPMENT ONLY: serve PUT /_dev/toggles/NAME to switch deliberate differences",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        print(f"search: schema at {migrate(args.database_url)}")
    elif args.command == "backfill":
        try:
            copied = backfill(args.from_database_url, args.database_url)
        except copying.BackfillError as exc:
            print(f"search: {exc}", file=sys.stderr)
            return 1
        print(f"search: backfilled {copied} documents")
    else:
        serve(args.database_url, args.host, args.port, args.dev_toggles)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
