"""`strangler cdc run | status | check`: the CDC bridge's command line.

    strangler cdc run --bootstrap-servers HOST:PORT   # production: Kafka fed by Debezium
    strangler cdc run --embedded                      # in-process Kafka + the SQLite dev capture
    strangler cdc status                              # what the running bridge reports
    strangler cdc skip TOPIC PARTITION OFFSET         # never apply that message
    strangler cdc replay TOPIC PARTITION OFFSET       # consume that partition again from there
    strangler cdc check [MAPPING] [--database-url URL]

Defaults come from the environment: CDC_BOOTSTRAP_SERVERS, SEARCH_DATABASE_URL (the target),
DATABASE_URL (the monolith's SQLite file, for --embedded), CDC_MAPPING, CDC_GROUP_ID,
CDC_STATUS_FILE, CDC_SESSION_TIMEOUT_MS, CDC_INSTANCE_ID, CDC_TOMBSTONE_RETENTION (a
duration: 7d, 12h, 90m).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

from cdc import mapping as mappings
from cdc.actions import KINDS, actions_file, request
from cdc.capture import Capture
from cdc.cluster import MockCluster
from cdc.consumer import Bridge, Options
from cdc.errors import CdcError, MappingError, SinkUnavailable
from cdc.metrics import render
from cdc.settings import Settings, parse_duration, settings
from cdc.sink import SqlSink, create_engine
from common import positions


def _parser() -> argparse.ArgumentParser:
    env = settings()
    parser = argparse.ArgumentParser(
        prog="strangler cdc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub.add_parser("run", help="consume change events and apply them"), env)
    status = sub.add_parser("status", help="print the running bridge's status")
    status.add_argument("--status-file", type=Path, default=env.status_file)
    status.add_argument("--json", action="store_true")
    for kind, text in (
        ("skip", "never apply the message at this offset (the bridge counts it as skipped)"),
        ("replay", "consume the partition again from this offset (applied events are skipped)"),
    ):
        action = sub.add_parser(kind, help=text)
        action.add_argument("topic")
        action.add_argument("partition", type=int)
        action.add_argument("offset", type=int)
        action.add_argument("--status-file", type=Path, default=env.status_file)
    check = sub.add_parser("check", help="validate a mapping file (and the target's tables)")
    check.add_argument("mapping", type=Path, nargs="?", default=env.mapping_path)
    check.add_argument("--database-url", default=None)
    return parser


def _add_run(run: argparse.ArgumentParser, env: Settings) -> None:
    """`run`'s options: where the events come from and go, the group, the batches."""
    where = run.add_mutually_exclusive_group()
    where.add_argument("--bootstrap-servers", default=env.bootstrap_servers)
    where.add_argument(
        "--embedded",
        action="store_true",
        help="start the in-process mock Kafka and the SQLite dev capture (a Debezium stand-in)",
    )
    run.add_argument("--database-url", default=env.database_url, help="the target database")
    run.add_argument("--source-database-url", default=env.source_database_url)
    run.add_argument("--mapping", type=Path, default=env.mapping_path)
    run.add_argument("--group-id", default=env.group_id)
    run.add_argument("--status-file", type=Path, default=env.status_file)
    run.add_argument("--max-batch", type=int, default=Options.max_batch)
    run.add_argument(
        "--session-timeout-ms",
        type=int,
        default=env.session_timeout_ms,
        help="how long the group waits for a member that died without leaving (min 6000)",
    )
    run.add_argument(
        "--instance-id",
        default=env.instance_id,
        help="group.instance.id: a stable name per replica; a restart skips the rebalance",
    )
    run.add_argument(
        "--assign-all",
        action="store_true",
        help="take every partition, no group rebalancing (one bridge; restarts resume at once)",
    )
    run.add_argument(
        "--kafka-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for the consumer and the dead-letter producer (repeatable)",
    )
    run.add_argument(
        "--tombstone-retention",
        type=_duration,
        default=env.tombstone_retention,
        help="how long a delete's tombstone guards against older replayed events (7d)",
    )


def run(args: argparse.Namespace) -> int:
    mapping = mappings.load(args.mapping)
    engine = create_engine(args.database_url)
    stack: list[threading.Thread] = []
    stop_capture = threading.Event()
    try:
        # Opened by the bridge, which waits for a database that is not up yet.
        sink = SqlSink(engine, mapping, args.tombstone_retention)
        servers = args.bootstrap_servers
        cluster = None
        if servers is None and not args.embedded:
            print("strangler cdc: give --bootstrap-servers or --embedded", file=sys.stderr)
            return 2
        if args.embedded:
            cluster = MockCluster()
            servers = cluster.bootstrap_servers
            stack.append(_start_capture(args, mapping, sink, cluster, stop_capture))
        bridge = Bridge(mapping, sink, _options(args, servers))

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            bridge.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"strangler cdc: consuming {', '.join(mapping.topics)} from {servers}", flush=True)
        bridge.run()
        print("strangler cdc: stopped", flush=True)
        return 0
    finally:
        stop_capture.set()
        for thread in stack:
            thread.join(timeout=10)
        engine.dispose()


def _options(args: argparse.Namespace, servers: str) -> Options:
    extra = []
    for setting in args.kafka_option:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise CdcError(f"--kafka-option {setting!r} is not KEY=VALUE")
        extra.append((key, value))
    return Options(
        servers,
        args.group_id,
        args.max_batch,
        status_file=args.status_file,
        extra=tuple(extra),
        session_timeout_ms=args.session_timeout_ms,
        instance_id=args.instance_id,
        # The embedded cluster lives and dies with this one bridge: no group to wait for.
        assign_all=args.assign_all or args.embedded,
    )


def _start_capture(
    args: argparse.Namespace,
    mapping: mappings.Mapping,
    sink: SqlSink,
    cluster: MockCluster,
    stop: threading.Event,
) -> threading.Thread:
    tables = [topic.rsplit(".", 1)[1] for topic in mapping.topics]
    capture = Capture(args.source_database_url, mapping.topic_prefix, tables)
    capture.install()
    producer = cluster.producer()
    capture.create_topics(producer)
    # The mock cluster forgets everything when this process ends: start from a snapshot
    # whenever the target has not seen this source yet (Debezium's snapshot.mode=initial).
    try:
        seen = positions.read(sink.engine, mapping.topic_prefix)
    except positions.PositionsUnavailable as exc:
        raise SinkUnavailable(str(exc)) from exc
    if not seen:
        sent = capture.snapshot(producer)
        print(f"strangler cdc: dev capture snapshot, {sent} rows (op r)", flush=True)

    def relay() -> None:
        try:
            capture.run(producer, stop)
        finally:
            capture.close()

    thread = threading.Thread(target=relay, name="sqlite-dev-capture", daemon=True)
    thread.start()
    return thread


def status(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.status_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"strangler cdc: no status at {args.status_file}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=1) if args.json else render(data))
    return 0


def operator(args: argparse.Namespace) -> int:
    path = actions_file(args.status_file)
    try:
        action = request(path, args.command, args.topic, args.partition, args.offset)
    except ValueError as exc:
        print(f"strangler cdc: {exc}", file=sys.stderr)
        return 2
    print(
        f"strangler cdc: requested {action.describe()} (id {action.id}) in {path}; the bridge"
        " carries it out within a second, or when it starts (see `strangler cdc status`)"
    )
    return 0


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def check(args: argparse.Namespace) -> int:
    mapping = mappings.load(args.mapping)
    if args.database_url:
        engine = create_engine(args.database_url)
        try:
            SqlSink(engine, mapping).open()
        finally:
            engine.dispose()
    for table in mapping.tables:
        join = f" + join {table.join.target} on {table.join.on}" if table.join else ""
        print(f"{table.topic} -> {table.target} key {list(table.key)}{join}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "run":
            return run(args)
        if args.command == "status":
            return status(args)
        if args.command in KINDS:
            return operator(args)
        return check(args)
    except MappingError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except CdcError as exc:
        print(f"strangler cdc: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
