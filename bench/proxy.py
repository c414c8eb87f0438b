"""The proxy benchmark: the gateway against the bare upstream and against nginx, in one run.

One upstream (``bench.upstream``) serves a fixed JSON body. The gateway, and nginx when it is
installed, proxy ``/bench`` to it, each with one worker. The same load generator then measures,
one after the other and each after a short warm-up: the upstream directly, the gateway, nginx.
Throughput ratios (gateway requests/s over the reference's) are the result; absolute figures
depend on the machine, ratios measured in the same run much less so. Variants of the gateway
are measured against the plain one: with tokens and the policy (``auth``), and with a sticky
weighted split on the route (``split``: a returning client, ``split-new``: a first visit).
``--breakdown`` measures instead what each feature layer costs (bench/breakdown.py).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench import loadgen, nginx, upstream
from bench.errors import BenchError
from bench.loadgen import LoadGenerator, LoadResult
from bench.process import Target, free_port, running

BENCH_PATH = "/bench"
GATEWAY_HEALTH_PATH = "/_strangler/health"
WARMUP_SECONDS = 1
# A run in which more than this share of requests failed measures failures, not a proxy.
MAX_ERROR_SHARE = 0.01

_ROUTES = """\
upstreams:
  backend: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: backend
auth: {{default: none}}
authz: none
routes:
  - name: bench
    path: {path}
    upstream: backend
"""


# The same routing with identity on: an RS256 token on every request, verified, and the
# embedded policy asked. "auth" keeps the token and decision caches on, "auth-nocache" turns
# both off, so the two show what the caches buy.
AUTH_PATH = "/search"  # a public read in policies/authz.rego: allowed for a signed-in user
POLICIES = Path(__file__).resolve().parent.parent / "policies"
_AUTH_ROUTES = """\
upstreams:
  backend: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: backend
auth:
  default: required
  cache_size: {token_cache}
  keys:
    - {{id: bench, algorithm: RS256, public_key_file: bench.pem}}
authz: {{engine: embedded, policies: "{policies}", cache: {decision_cache}}}
routes:
  - name: search
    path: {path}
    upstream: backend
"""


# The same routing as a canary: a sticky 90/10 split between two names for the upstream.
# "split" is a returning browser (the sticky cookie sent), "split-new" a first visit on every
# request (no cookie: the key is a MAC of the address, and the answer sets the cookie).
_SPLIT_ROUTES = """\
upstreams:
  backend: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
  canary: {{url: "http://127.0.0.1:{port}", timeout: 5s}}
default: backend
auth: {{default: none}}
authz: none
shadow_store: {{url: "sqlite:///{store}"}}
routes:
  - name: bench
    path: {path}
    upstream: {{backend: 90, canary: 10}}
"""
RETURNING = (("Cookie", "strangler_sticky=" + "0123456789abcdef" * 2),)


def auth_token(workdir: Path) -> str:
    """A fresh RS256 key pair: the public half for the gateway, a token signed by the other."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (workdir / "bench.pem").write_bytes(public)
    now = int(time.time())
    claims = {"sub": "bench-user", "roles": ["buyer"], "iat": now, "exp": now + 3600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


@dataclass(frozen=True)
class Options:
    duration: int
    connections: int
    loadgen: str
    nginx: bool


@dataclass(frozen=True)
class Measurement:
    target: str
    result: LoadResult


def plain_routes(upstream_port: int) -> str:
    """The plain gateway's routes file (``bench.workers`` measures it with N workers)."""
    return _ROUTES.format(port=upstream_port, path=BENCH_PATH)


def gateway_command(routes: Path, port: int) -> list[str]:
    """The gateway on 127.0.0.1:``port``, one worker (``bench.workers`` adds --workers).

    Its access log is off, as nginx's is, so both proxies do the same work per request.
    """
    return [
        sys.executable,
        "-m",
        "cli",
        "gateway",
        "serve",
        "--routes",
        str(routes),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]


@contextmanager
def _targets(options: Options) -> Iterator[tuple[list[Target], str | None]]:
    """Start every target; yield them with the reason nginx was skipped, if it was.

    Routes, nginx's files and the children's logs go to a temp directory removed on exit.
    """
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-bench-")))

        def start(
            name: str,
            argv: list[str],
            port: int,
            ready_path: str = BENCH_PATH,
            url_path: str = BENCH_PATH,
            headers: tuple[tuple[str, str], ...] = (),
        ) -> Target:
            return stack.enter_context(
                running(
                    name,
                    argv,
                    port=port,
                    ready_path=ready_path,
                    url_path=url_path,
                    log_dir=workdir,
                    headers=headers,
                )
            )

        upstream_port = free_port()
        targets = [start("direct", upstream.command(upstream_port), upstream_port)]
        routes = workdir / "routes.yaml"
        routes.write_text(_ROUTES.format(port=upstream_port, path=BENCH_PATH))
        gateway_port = free_port()
        gateway_argv = gateway_command(routes, gateway_port)
        targets.append(start("gateway", gateway_argv, gateway_port, GATEWAY_HEALTH_PATH))
        bearer = (("Authorization", f"Bearer {auth_token(workdir)}"),)
        for name, token_cache, decision_cache in (
            ("auth", 10000, "5s"),
            ("auth-nocache", 0, "off"),
        ):
            auth_routes = workdir / f"{name}.yaml"
            auth_routes.write_text(
                _AUTH_ROUTES.format(
                    port=upstream_port,
                    path=AUTH_PATH,
                    policies=POLICIES,
                    token_cache=token_cache,
                    decision_cache=decision_cache,
                )
            )
            port = free_port()
            argv = gateway_command(auth_routes, port)
            targets.append(start(name, argv, port, GATEWAY_HEALTH_PATH, AUTH_PATH, bearer))
        split_routes = workdir / "split.yaml"
        split_routes.write_text(
            _SPLIT_ROUTES.format(port=upstream_port, path=BENCH_PATH, store=workdir / "shadow.db")
        )
        for name, headers in (("split", RETURNING), ("split-new", ())):
            port = free_port()
            argv = gateway_command(split_routes, port)
            targets.append(start(name, argv, port, GATEWAY_HEALTH_PATH, BENCH_PATH, headers))
        executable = nginx.binary()
        skipped: str | None = None
        if not options.nginx:
            skipped = "turned off with --no-nginx"
        elif executable is None:
            skipped = "nginx is not on PATH"
        else:
            nginx_port = free_port()
            nginx_argv = nginx.command(
                executable, workdir / "nginx", listen_port=nginx_port, upstream_port=upstream_port
            )
            targets.append(start("nginx", nginx_argv, nginx_port))
        yield targets, skipped


def measure(
    generate: LoadGenerator, target: Target, connections: int, duration: int
) -> Measurement:
    """One target after a warm-up, with the same load as every other target of the run."""
    generate(target.url, connections, WARMUP_SECONDS, target.headers)
    result = generate(target.url, connections, duration, target.headers)
    return Measurement(target.name, result)


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms"


def table(measurements: list[Measurement]) -> str:
    lines = [f"{'target':<10}{'requests/s':>12}{'p50':>11}{'p99':>11}{'errors':>9}"]
    for m in measurements:
        r = m.result
        lines.append(
            f"{m.target:<10}{r.requests_per_second:>12.1f}"
            f"{_milliseconds(r.p50):>11}{_milliseconds(r.p99):>11}{r.errors:>9}"
        )
    return "\n".join(lines)


def ratio(gateway: LoadResult, reference: LoadResult) -> float:
    if reference.requests_per_second <= 0:
        raise BenchError("the reference served no requests; no ratio can be computed")
    return gateway.requests_per_second / reference.requests_per_second


def worker_micros(variant: LoadResult, reference: LoadResult) -> float:
    """What a variant adds to the one worker's time per request, in microseconds: the
    difference of the mean service times (1 / throughput) of a saturated worker."""
    return (1 / variant.requests_per_second - 1 / reference.requests_per_second) * 1e6


def require_no_errors(measurements: list[Measurement]) -> None:
    """A comparison in which any request failed measures failures: refuse it."""
    errors = [m.target for m in measurements if m.result.errors]
    if errors:
        raise BenchError(f"requests failed on {', '.join(errors)}: the comparison is void")


def _too_many_errors(measurements: list[Measurement]) -> list[str]:
    failed = []
    for m in measurements:
        attempts = m.result.requests + m.result.errors
        if attempts == 0 or m.result.errors / attempts > MAX_ERROR_SHARE:
            failed.append(f"{m.target}: {m.result.errors} errors in {attempts} requests")
    return failed


def run(options: Options) -> int:
    """Run the benchmark, print the table and the ratios; 0 on success.

    Raises ``BenchError`` when a target does not start or a load generator fails.
    """
    name, generate = loadgen.choose(options.loadgen)
    with _targets(options) as (targets, nginx_skipped):
        print(
            f"proxy benchmark: {name}, {options.connections} connections, "
            f"{options.duration} s per target after a {WARMUP_SECONDS} s warm-up",
            flush=True,
        )
        measurements = [
            measure(generate, target, options.connections, options.duration) for target in targets
        ]
    by_target = {m.target: m.result for m in measurements}
    print(table(measurements))
    if nginx_skipped is not None:
        print(f"nginx: skipped ({nginx_skipped})")
    print(f"ratio gateway/direct={ratio(by_target['gateway'], by_target['direct']):.3f}")
    if "nginx" in by_target:
        print(f"ratio gateway/nginx={ratio(by_target['gateway'], by_target['nginx']):.3f}")
    print(f"ratio auth/plain={ratio(by_target['auth'], by_target['gateway']):.3f}")
    print(f"ratio auth-nocache/plain={ratio(by_target['auth-nocache'], by_target['gateway']):.3f}")
    print(f"ratio split/plain={ratio(by_target['split'], by_target['gateway']):.3f}")
    print(f"ratio split-new/plain={ratio(by_target['split-new'], by_target['gateway']):.3f}")
    failed = _too_many_errors(measurements)
    if failed:
        print(
            f"too many errors (more than {MAX_ERROR_SHARE:.0%} of requests): " + "; ".join(failed),
            file=sys.stderr,
        )
        return 1
    return 0
