"""Benchmarks against reference systems measured in the same run.

    python -m bench proxy [--duration SECONDS] [--connections N]
                          [--loadgen auto|wrk|python] [--no-nginx] [--workers N]
    python -m bench proxy --breakdown [--rounds N] [--duration SECONDS] [--connections N]
    python -m bench shadow [--duration SECONDS] [--connections N] [--loadgen ...]
                           [--rounds N] [--rate SHARE] [--mode process|inline] [--separate]
    python -m bench faults [--duration SECONDS] [--connections N] [--loadgen ...]
                           [--rate REQUESTS_PER_SECOND] [--share FAILING_SHARE] [--rounds N]
    python -m bench cdc [--events N] [--rate EVENTS_PER_SECOND] [--lag-seconds SECONDS]
    python -m bench limits [--duration SECONDS] [--connections N] [--loadgen ...]
    python -m bench ryw [--duration SECONDS] [--connections N] [--loadgen ...]
    python -m bench websocket [--messages N]
    python -m bench soak [--minutes N] [--warmup SECONDS] [--connections N]
                         [--rps REQUESTS_PER_SECOND | --share SHARE]

(``strangler bench ...`` is the same command.)
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from bench import (
    breakdown,
    cdc,
    consistency,
    faults,
    limits,
    proxy,
    shadow,
    soak,
    websocket,
    workers,
)
from bench.errors import BenchError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value}")
    return value


def _minutes(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=_positive, default=10, metavar="SECONDS")
    parser.add_argument("--connections", type=_positive, default=32, metavar="N")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench_proxy = sub.add_parser(
        "proxy",
        help="the gateway against the bare upstream and nginx",
        description=proxy.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_proxy.add_argument(
        "--duration",
        type=_positive,
        default=10,
        metavar="SECONDS",
        help="measured seconds per target, after a warm-up (default 10)",
    )
    bench_proxy.add_argument(
        "--connections",
        type=_positive,
        default=32,
        metavar="N",
        help="concurrent keep-alive connections (default 32)",
    )
    bench_proxy.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk when on PATH (auto), or force one (default auto)",
    )
    bench_proxy.add_argument(
        "--no-nginx",
        dest="nginx",
        action="store_false",
        help="skip the nginx reference even when nginx is installed",
    )
    bench_proxy.add_argument(
        "--breakdown",
        action="store_true",
        help="instead: the gateway's CPU per request with each feature layer off in turn "
        "(bench/breakdown.py)",
    )
    bench_proxy.add_argument(
        "--rounds", type=_positive, default=3, help="--breakdown: repeat; medians (default 3)"
    )
    bench_proxy.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="instead: the plain gateway with 1 worker and with N (bench/workers.py)",
    )
    bench_shadow = sub.add_parser(
        "shadow",
        help="what mirroring every request costs the primary",
        description=shadow.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_arguments(bench_shadow)
    bench_shadow.add_argument(
        "--rounds", type=_positive, default=1, help="repeat; ratios are the medians"
    )
    bench_shadow.add_argument(
        "--rate",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="fixed-rate runs offer this share of the unshadowed saturated throughput",
    )
    bench_shadow.add_argument(
        "--mode", choices=["process", "inline"], default="process", help="shadow_worker mode"
    )
    bench_shadow.add_argument(
        "--separate",
        action="store_true",
        help="add shadow-sink: copies sent to a worker that compares nothing (the gateway's "
        "own cost of mirroring)",
    )
    bench_limits = sub.add_parser(
        "limits",
        help="what a rate-limited route costs, in memory and in Redis",
        description=limits.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_arguments(bench_limits)
    bench_ryw = sub.add_parser(
        "ryw",
        help="what read-your-writes costs a route's reads",
        description=consistency.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_arguments(bench_ryw)
    bench_faults = sub.add_parser(
        "faults",
        help="a failing upstream next to a healthy one, with the circuit breaker on and off",
        description=faults.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_arguments(bench_faults)
    bench_faults.add_argument(
        "--rate",
        type=_positive,
        default=500,
        metavar="REQUESTS_PER_SECOND",
        help="paced load on the flaky route (default 500)",
    )
    bench_faults.add_argument(
        "--share",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="share of the flaky upstream's requests that fail during faults (default 0.5)",
    )
    bench_faults.add_argument(
        "--rounds", type=_positive, default=3, help="repeat; ratios are the medians (default 3)"
    )
    bench_soak = sub.add_parser(
        "soak",
        help="a fixed rate through every feature for minutes: the gateway's memory and fds",
        description=soak.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_soak.add_argument(
        "--minutes", type=_minutes, default=10.0, help="sampled minutes after the warm-up"
    )
    bench_soak.add_argument(
        "--warmup", type=_positive, default=60, metavar="SECONDS", help="default 60"
    )
    bench_soak.add_argument("--connections", type=_positive, default=32, metavar="N")
    rate = bench_soak.add_mutually_exclusive_group()
    rate.add_argument(
        "--rps", type=_positive, metavar="REQUESTS_PER_SECOND", help="a fixed offered rate"
    )
    rate.add_argument(
        "--share",
        type=_share,
        default=0.65,
        metavar="SHARE",
        help="offer this share of a 5 s saturation probe (default 0.65)",
    )
    bench_cdc = sub.add_parser(
        "cdc",
        help="the CDC bridge against a raw executemany upsert, and its lag",
        description=cdc.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_cdc.add_argument("--events", type=_positive, default=200_000, metavar="N")
    bench_cdc.add_argument("--rate", type=_positive, default=5000, metavar="EVENTS_PER_SECOND")
    bench_cdc.add_argument("--lag-seconds", type=_positive, default=5, metavar="SECONDS")
    bench_ws = sub.add_parser(
        "websocket",
        help="WebSocket echo round trips through the gateway against the upstream directly",
        description=websocket.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench_ws.add_argument("--messages", type=_positive, default=5000, metavar="N")
    return parser


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks that stop the child processes.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if args.command == "websocket":
            return websocket.run(websocket.Options(args.messages))
        if args.command == "cdc":
            return cdc.run(cdc.Options(args.events, args.rate, args.lag_seconds))
        if args.command == "soak":
            return soak.run(
                soak.Options(args.minutes, args.warmup, args.connections, args.rps, args.share)
            )
        if args.command == "ryw":
            return consistency.run(
                consistency.Options(args.duration, args.connections, args.loadgen)
            )
        if args.command == "limits":
            return limits.run(limits.Options(args.duration, args.connections, args.loadgen))
        if args.command == "faults":
            return faults.run(
                faults.Options(
                    args.duration,
                    args.connections,
                    args.loadgen,
                    args.rate,
                    args.share,
                    args.rounds,
                )
            )
        if args.command == "shadow":
            return shadow.run(
                shadow.Options(
                    args.duration,
                    args.connections,
                    args.loadgen,
                    args.rounds,
                    args.rate,
                    args.mode,
                    args.separate,
                )
            )
        if args.breakdown:
            return breakdown.run(
                breakdown.Options(args.duration, args.connections, args.loadgen, args.rounds)
            )
        if args.workers > 1:
            return workers.run(
                workers.Options(args.duration, args.connections, args.loadgen, args.workers)
            )
        options = proxy.Options(
            duration=args.duration,
            connections=args.connections,
            loadgen=args.loadgen,
            nginx=args.nginx,
        )
        return proxy.run(options)
    except BenchError as exc:
        print(f"bench {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
