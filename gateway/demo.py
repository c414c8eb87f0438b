"""`strangler demo`: move /search from the monolith to the new service by editing routes.yaml.

Everything runs on this machine with embedded defaults: SQLite files in a work directory,
the monolith, the search service and the gateway as child processes on loopback ports.
Each step is checked; `--check` runs the story non-interactively and exits non-zero with
the failing step.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from gateway import config, demo_cdc, tokens

QUERY = "/search?q=lamp&size=5"
# The shadow steps' traffic: searches whose answers carry prices.
TRAFFIC = [f"/search?q={q}&size=10&page={page}" for q in ("a", "e", "o", "lamp") for page in (1, 2)]
SHADOW = "    shadow: {upstream: search, sample: 100%, timeout: 2s}   # compare the new service\n"
TOGGLE = "/_dev/toggles/rounded_prices"
ROUTES = """\
# The migration map for this demo. Edit `upstream:` of a route to move that feature.
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}", timeout: 5s}}
  search: {{url: "http://127.0.0.1:{search}", timeout: 2s}}
default: legacy          # everything not listed below stays with the monolith
auth:
  default: required
  keys:                  # a development key made for this run: strangler token signs with it
    - {{id: dev, algorithm: HS256, secret: "{secret}", dev: true}}
authz: {{engine: embedded, policies: "{policies}"}}
shadow_store: {{url: "sqlite:///{store}"}}
routes:
  - name: search
    path: /search
    methods: [GET]
    upstream: {target}
    auth: optional       # a public read: the policy lets everyone search
{shadow}  - name: products
    path: /products
    upstream: legacy
    auth: optional
"""
POLICIES = Path(__file__).resolve().parent.parent / "policies"


class StepFailed(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    status: int
    upstream: str | None
    body: bytes


@dataclass
class Demo:
    workdir: str | None = None
    gateway_port: int = 0
    legacy_port: int = 0
    search_port: int = 0
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    step_no: int = 0
    step_text: str = ""

    def run(self, check: bool) -> int:
        with contextlib.ExitStack() as stack:
            if self.workdir is None:
                self.workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-"))
            work = Path(self.workdir)
            work.mkdir(parents=True, exist_ok=True)
            stack.callback(self.stop)
            try:
                self.story(work)
            except (StepFailed, demo_cdc.StepError) as exc:
                print(f"\nFAILED at step {self.step_no} ({self.step_text}): {exc}", file=sys.stderr)
                print(f"Logs are in {work}/*.log", file=sys.stderr)
                if check:
                    self.dump_logs(work)
                return 1
            if check:
                print("\nAll steps verified.")
                return 0
            self.wait_for_interrupt(work)
        return 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.step_text = text
        print(f"\n[{self.step_no}] {text}", flush=True)

    def story(self, work: Path) -> None:
        from legacy_monolith import manage as monolith
        from new_services.search import manage as search

        legacy_db = f"sqlite:///{work / 'legacy.db'}"
        search_db = f"sqlite:///{work / 'search.db'}"
        ports = [p or free_port() for p in (self.gateway_port, self.legacy_port, self.search_port)]
        self.gateway_port, self.legacy_port, self.search_port = ports

        self.step("Set up the monolith's database (Alembic migrations, then seed data)")
        monolith.migrate(legacy_db)
        monolith.seed(legacy_db)
        print(f"    {legacy_db}")

        self.step(
            "Set up the search service's own database; the CDC bridge fills it and keeps it in sync"
        )
        search.migrate(search_db)
        status = demo_cdc.start_bridge(self, work, legacy_db, search_db)
        copied, seconds = demo_cdc.wait_snapshot(legacy_db, search_db, self.check_running)
        print(
            f"    {search_db}: {copied} search documents from a snapshot (op r) in {seconds:.1f}s"
        )
        print(f"    strangler cdc run --embedded: Kafka (mock cluster) + dev capture -> {status}")

        self.step("Start the monolith, the search service and the gateway")
        routes = work / "routes.yaml"
        self.write_routes(routes, "legacy")
        cli = [sys.executable, "-m", "gateway.cli"]
        self.start(
            work,
            "legacy",
            [
                *cli,
                "monolith",
                "serve",
                "--database-url",
                legacy_db,
                "--port",
                str(self.legacy_port),
            ],
        )
        self.start(
            work,
            "search",
            [
                *cli,
                "search",
                "serve",
                "--database-url",
                search_db,
                "--port",
                str(self.search_port),
                "--dev-toggles",  # the shadow steps switch a deliberate difference on and off
            ],
        )
        self.start(
            work,
            "gateway",
            [
                *cli,
                "gateway",
                "serve",
                "--routes",
                str(routes),
                "--port",
                str(self.gateway_port),
                "--reload-interval",
                "0.2",
            ],
        )
        self.wait_healthy(self.legacy_port, "/health")
        self.wait_healthy(self.search_port, "/health")
        self.wait_healthy(self.gateway_port, "/_strangler/health")
        print(f"    monolith  http://127.0.0.1:{self.legacy_port}")
        print(f"    search    http://127.0.0.1:{self.search_port}")
        print(f"    gateway   http://127.0.0.1:{self.gateway_port}  (routes: {routes})")

        self.step(f"GET {QUERY} through the gateway: the monolith answers")
        before = self.expect_upstream(QUERY, "legacy")

        self.shadow_steps(routes)

        self.step("Edit routes.yaml: the search route now points at the new service")
        version = self.routes_version()
        self.write_routes(routes, "search")
        print("    - name: search\n      path: /search\n      upstream: search   # was: legacy")
        self.wait_reloaded(version)

        self.step(f"GET {QUERY} again: the new service answers, with the same bytes")
        after = self.expect_upstream(QUERY, "search")
        if after.body != before.body:
            raise StepFailed("the search service's answer differs from the monolith's")
        print(f"    identical body ({len(after.body)} bytes)")

        self.step("Everything else still goes to the monolith")
        self.expect_upstream("/products/1", "legacy")

        self.step("Write to the monolith through the gateway: CDC carries it to the new service")
        demo_cdc.write_and_find(self)

    def shadow_steps(self, routes: Path) -> None:
        self.step("Edit routes.yaml: shadow /search to the new service (the monolith answers)")
        version = self.routes_version()
        self.write_routes(routes, "legacy", shadow=True)
        print("    - name: search\n      upstream: legacy\n  " + SHADOW.rstrip())
        self.wait_reloaded(version)

        self.step(f"Play {len(TRAFFIC)} searches: the shadow report shows the match rate")
        since = time.time()
        self.play()
        summary = self.shadow_summary(since)
        if summary["identical"] != len(TRAFFIC):
            raise StepFailed(f"expected every answer to match, the report says {summary}")

        self.step("Turn on rounded prices in the new service: the differing field shows up")
        since = self.toggle("on")
        self.play()
        summary = self.shadow_summary(since)
        fields = [f["path"] for f in summary["top_differences"]]
        if summary["different"] == 0 or fields[:1] != ["$.results[*].price"]:
            raise StepFailed(f"expected $.results[*].price to differ, the report says {summary}")

        self.step("Turn rounded prices off again: the difference goes away")
        since = self.toggle("off")
        self.play()
        summary = self.shadow_summary(since)
        if summary["identical"] != len(TRAFFIC) or summary["top_differences"]:
            raise StepFailed(f"expected every answer to match again, the report says {summary}")

    def play(self) -> None:
        for path in TRAFFIC:
            answer = self.get(self.gateway_port, path)
            if answer.status != 200 or answer.upstream != "legacy":
                raise StepFailed(f"{path}: {answer.status} from {answer.upstream!r}, not legacy")

    def toggle(self, value: str) -> float:
        """Switch the search service's rounded prices; return the time it was switched."""
        at = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", self.search_port, timeout=10)
        try:
            conn.request("PUT", TOGGLE, body=value)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise StepFailed(f"PUT {TOGGLE} answered {response.status}: {body[:200]!r}")
        print(f"    PUT http://127.0.0.1:{self.search_port}{TOGGLE} {value} -> {body.decode()}")
        return at

    def shadow_summary(self, since: float, seconds: float = 20) -> dict[str, Any]:
        """The report on the comparisons since `since`, once all of TRAFFIC is compared."""
        admin = tokens.mint(self.dev_key(), "demo", ["admin"], ttl=300)
        deadline = time.monotonic() + seconds
        while True:
            window = math.ceil((time.time() - since) * 1000)
            answer = self.get(
                self.gateway_port, f"/_strangler/shadow?route=search&since={window}ms", admin
            )
            if answer.status != 200:
                raise StepFailed(f"the shadow report answered {answer.status}: {answer.body!r}")
            routes = json.loads(answer.body)["routes"]
            summary: dict[str, Any] = routes[0] if routes else {"mirrored": 0}
            if summary["mirrored"] >= len(TRAFFIC):
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{len(TRAFFIC)} comparisons expected, the report says {routes}")
            time.sleep(0.1)  # the comparisons run in the shadow worker; we poll the report
        print(
            f"    GET /_strangler/shadow: mirrored {summary['mirrored']}, compared "
            f"{summary['compared']}: {summary['identical']} identical "
            f"({summary['identical_pct']:.1f}%), {summary['different']} differing "
            f"({summary['differing_pct']:.1f}%)"
        )
        for top in summary["top_differences"][:3]:
            example = top["example"]
            print(
                f"    differing field {top['path']} ({top['kind']}) in {top['count']} "
                f"comparisons, e.g. {example['path']}: {example['primary']} -> "
                f"{example['candidate']}"
            )
        return summary

    def write_routes(self, path: Path, target: str, shadow: bool = False) -> None:
        text = ROUTES.format(
            legacy=self.legacy_port,
            search=self.search_port,
            target=target,
            secret=self.secret,
            policies=POLICIES,
            store=path.parent / "shadow.db",
            shadow=SHADOW if shadow else "",
        )
        config.parse(text.encode(), str(path))  # never hand the gateway a file we did not check
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # atomic: the watcher never reads a half-written file

    def start(self, work: Path, name: str, argv: list[str]) -> None:
        with (work / f"{name}.log").open("ab") as log:
            self.processes.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work)
            )
        self.names.append(name)

    def send(
        self, method: str, path: str, body: dict[str, object] | None, roles: list[str]
    ) -> tuple[int, bytes]:
        """A request through the gateway, with a token of these roles when there are any."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway_port, timeout=10)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if roles:
            token = tokens.mint(self.dev_key(), "demo", roles, ttl=300)
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, port: int, path: str, token: str | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return Answer(
                response.status, response.getheader("x-strangler-upstream"), response.read()
            )
        finally:
            conn.close()

    def wait_healthy(self, port: int, path: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_running()
            with contextlib.suppress(OSError):
                if self.get(port, path).status == 200:
                    return
            time.sleep(0.1)  # start-up of a child process: nothing to wait on but the port
        raise StepFailed(f"nothing healthy on port {port} after {seconds}s")

    def check_running(self) -> None:
        for name, proc in zip(self.names, self.processes, strict=True):
            if proc.poll() is not None:
                raise StepFailed(f"the {name} process exited ({proc.returncode})")

    def expect_upstream(self, path: str, upstream: str) -> Answer:
        answer = self.get(self.gateway_port, path)
        print(f"    HTTP {answer.status}, X-Strangler-Upstream: {answer.upstream}")
        if answer.status != 200 or answer.upstream != upstream:
            raise StepFailed(
                f"expected 200 from {upstream!r}, got {answer.status} from "
                f"{answer.upstream!r}: {answer.body[:200]!r}"
            )
        if path.startswith("/search"):
            data = json.loads(answer.body)
            names = ", ".join(r["name"] for r in data["results"][:3])
            print(f"    {data['total']} products match; first: {names}")
        return answer

    def routes_version(self) -> str:
        admin = tokens.mint(self.dev_key(), "demo", ["admin"], ttl=300)
        answer = self.get(self.gateway_port, "/_strangler/routes", admin)
        if answer.status != 200:
            raise StepFailed(f"admin API answered {answer.status}: {answer.body[:200]!r}")
        version: str = json.loads(answer.body)["version"]
        return version

    def wait_reloaded(self, old: str, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (new := self.routes_version()) != old:
                print(f"    the gateway reloaded routes.yaml: version {old} -> {new}")
                return
            time.sleep(0.1)  # the gateway polls the file; we poll its admin endpoint
        raise StepFailed(f"the gateway did not pick up the edit within {seconds}s")

    def dev_key(self) -> tokens.StaticKey:
        return tokens.StaticKey("dev", "HS256", self.secret.encode(), dev=True)

    def wait_for_interrupt(self, work: Path) -> None:
        gw = f"http://127.0.0.1:{self.gateway_port}"
        print(
            f"\nThe stack keeps running. Try it:\n"
            f"    curl -i '{gw}/search?q=steel&category=kitchen'\n"
            f"    curl -i {gw}/products/42\n"
            f"    TOKEN=$(strangler token --routes {work / 'routes.yaml'} --sub alice "
            f"--roles admin,buyer)\n"
            f'    curl -s -H "Authorization: Bearer $TOKEN" {gw}/_strangler/routes\n'
            f"    strangler shadow report --routes {work / 'routes.yaml'}   # the shadow steps\n"
            f"    strangler cdc status --status-file {work / 'cdc-status.json'}\n"
            f"Move /search back by editing {work / 'routes.yaml'} (upstream: legacy).\n"
            f"Press Ctrl-C to stop."
        )
        stopped = False

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stopped and all(p.poll() is None for p in self.processes):
            time.sleep(0.5)
        print("\nStopping.")

    def dump_logs(self, work: Path) -> None:
        for log in sorted(work.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes.clear()
        self.names.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
