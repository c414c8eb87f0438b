"""`strangler monolith migrate | seed | serve`, also callable as plain functions.

Every subcommand takes `--database-url`, defaulting to the DATABASE_URL setting.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn
from sqlalchemy.orm import Session

from legacy_monolith import schema
from legacy_monolith import seed as sample_data
from legacy_monolith.asgi import create_app
from legacy_monolith.database import create_engine
from legacy_monolith.settings import settings

DEFAULT_PRODUCTS = 3000


def migrate(database_url: str | None = None) -> str:
    """Upgrade the schema to head (idempotent, safe from concurrent replicas); return head."""
    return schema.migrate(database_url or settings().database_url)


def seed(
    database_url: str | None = None, products: int = DEFAULT_PRODUCTS
) -> sample_data.SeedReport:
    """Fill a migrated, empty database with the deterministic sample data."""
    engine = create_engine(database_url or settings().database_url)
    try:
        with Session(engine) as session, session.begin():
            return sample_data.seed(session, products)
    finally:
        engine.dispose()


def serve(database_url: str | None = None, host: str = "127.0.0.1", port: int = 8001) -> None:
    uvicorn.run(
        create_app(database_url),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strangler monolith", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=None, help="default: $DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", parents=[common], help="upgrade the schema to head")
    seeding = sub.add_parser("seed", parents=[common], help="load the sample data once")
    seeding.add_argument("--products", type=int, default=DEFAULT_PRODUCTS)
    serving = sub.add_parser("serve", parents=[common], help="run the HTTP server")
    serving.add_argument("--host", default="127.0.0.1")
    serving.add_argument("--port", type=int, default=8001)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "migrate":
        print(f"legacy_monolith: schema at {migrate(args.database_url)}")
    elif args.command == "seed":
        report = seed(args.database_url, args.products)
        verb = "seeded" if report.created else "already seeded, left alone:"
        print(
            f"legacy_monolith: {verb} {report.categories} categories, {report.products} "
            f"products, {report.users} users, {report.orders} orders"
        )
    else:
        serve(args.database_url, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
