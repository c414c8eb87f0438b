"""The stack the demo drives: one it starts on this machine, or one that already runs.

`LocalStack` is `strangler demo`'s own, with the embedded defaults: SQLite files in a work
directory; the CDC bridge (librdkafka's mock cluster and the SQLite dev capture), the
monolith, the search service (with its dev toggles) and the gateway as child processes on
loopback ports; the gateway serving a routes file the demo wrote, with a development key
made for the run. `running()` describes a stack someone else runs (`strangler demo
--against URL`, such as the compose one) from the routes file its gateway reads; the key
is the one that file names, taken from the compose file when it is an environment
variable this shell does not have (demo/compose_env.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.validation import ConfigError
from demo import cdc as demo_cdc
from demo import compose_env
from demo.client import Client, NoAnswer
from demo.progress import StepFailed, StepLog
from gateway.config import table as config

POLICIES = Path(__file__).resolve().parent.parent / "policies"
ROUTES = """\
# The migration map of this demo run. `strangler demo` moves /search with `strangler routes
# promote | rollback` and one edit by hand; edit it yourself the same way: the gateway
# reloads it (check an edit first: strangler routes diff routes.yaml edited.yaml).
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}", timeout: 5s}}
  search: {{url: "http://127.0.0.1:{search}", timeout: 2s}}
default: legacy          # everything not listed below stays with the monolith
auth:
  default: required
  issuer: strangler-dev
  audience: shop
  keys:                  # a development key made for this run: strangler token signs with it
    - {{id: dev, algorithm: HS256, {key}, dev: true}}
authz: {{engine: embedded, policies: "{policies}"}}
shadow_store: {{url: "sqlite:///{store}"}}
cdc: {{status_file: cdc-status.json}}   # the bridge's status: CDC lag on the dashboard
read_your_writes:        # after a write, the writer reads from the monolith until the bridge
  mode: position         # has applied it (the monolith's X-Strangler-Commit-Position against
  window: 30s            # the search database's cdc_positions), at most for the window
  upstreams:
    search: {{positions: "sqlite:///{search_db}"}}
routes:
  - name: search
    path: /search
    methods: [GET]
    upstream: legacy
    auth: optional       # a public read: the policy lets everyone search
  - name: products
    path: /products
    upstream: legacy
    auth: optional
"""


@dataclass(frozen=True, slots=True)
class Target:
    """What the story needs to know of the stack it drives."""

    gateway: str  # the gateway's base URL
    routes: Path  # the routes file the gateway reads (and reloads)
    search: str | None  # the search service's own URL, for its dev toggles
    sync_deadline: float  # how long a write may take to reach the new service's /search
    cdc: bool  # whether a CDC bridge feeds the search service (step 4)
    token_command: str  # how a user gets an admin token for the dashboard
    alive: Callable[[], None]  # raises StepFailed when a process of the stack has died
    notes: tuple[str, ...] = ()  # said when the demo connects


@dataclass
class LocalStack:
    work: Path
    gateway_port: int = 0
    legacy_port: int = 0
    search_port: int = 0
    # The routes file names this variable for its key (the gateway gets it in its
    # environment) instead of holding the secret, as the compose stack's file does.
    secret_env: str | None = None
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def routes(self) -> Path:
        return self.work / "routes.yaml"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def start(self, progress: StepLog) -> Target:
        self.work.mkdir(parents=True, exist_ok=True)
        legacy_db = f"sqlite:///{self.work / 'legacy.db'}"
        search_db = f"sqlite:///{self.work / 'search.db'}"
        ports = [p or free_port() for p in (self.gateway_port, self.legacy_port, self.search_port)]
        self.gateway_port, self.legacy_port, self.search_port = ports
        self.set_up_databases(progress, legacy_db, search_db)
        self.start_servers(progress, legacy_db, search_db)
        return Target(
            gateway=self.gateway,
            routes=self.routes,
            search=f"http://127.0.0.1:{self.search_port}",
            sync_deadline=demo_cdc.SYNC_DEADLINE_SECONDS,
            cdc=True,
            token_command=f"strangler token --routes {self.routes} --sub you --roles admin",
            alive=self.alive,
        )

    def set_up_databases(self, progress: StepLog, legacy_db: str, search_db: str) -> None:
        """Steps 0.1 and 0.2: the monolith's data, and the CDC bridge copying it over."""
        from legacy_monolith import manage as monolith
        from new_services.search import manage as search

        progress.step("0.1", "Set up the monolith's database (Alembic migrations, then seed data)")
        monolith.migrate(legacy_db)
        monolith.seed(legacy_db)
        progress.say(legacy_db)

        progress.step(
            "0.2",
            "Set up the search service's own database: the CDC bridge fills it and keeps it synced",
        )
        search.migrate(search_db)
        status = demo_cdc.start_bridge(self, self.work, legacy_db, search_db)
        copied, seconds = demo_cdc.wait_snapshot(legacy_db, search_db, self.alive)
        progress.say(
            f"{search_db}: {copied} search documents from a snapshot (op r) in {seconds:.1f}s"
        )
        progress.say(
            f"strangler cdc run --embedded: Kafka (mock cluster) + dev capture -> {status}"
        )

    def start_servers(self, progress: StepLog, legacy_db: str, search_db: str) -> None:
        """Step 0.3: the monolith, the search service and the gateway, each until healthy."""
        progress.step("0.3", "Start the monolith, the search service and the gateway")
        self.write_routes()
        cli = [sys.executable, "-m", "cli"]
        port = ["--port"]
        self.spawn(
            "legacy",
            [*cli, "monolith", "serve", "--database-url", legacy_db, *port, str(self.legacy_port)],
        )
        self.spawn(
            "search",
            [
                *cli,
                *("search", "serve", "--database-url", search_db, *port, str(self.search_port)),
                "--dev-toggles",  # the shadow steps switch a deliberate difference on and off
            ],
        )
        self.spawn(
            "gateway",
            [
                *cli,
                *("gateway", "serve", "--routes", str(self.routes), *port, str(self.gateway_port)),
                *("--reload-interval", "0.2"),
            ],
        )
        self.wait_healthy(self.legacy_port, "/health")
        self.wait_healthy(self.search_port, "/health")
        self.wait_healthy(self.gateway_port, "/_strangler/health")
        progress.say(f"monolith  http://127.0.0.1:{self.legacy_port}")
        progress.say(f"search    http://127.0.0.1:{self.search_port}")
        progress.say(f"gateway   {self.gateway}  (routes: {self.routes})")

    def write_routes(self) -> None:
        key = f"secret_env: {self.secret_env}" if self.secret_env else f'secret: "{self.secret}"'
        text = ROUTES.format(
            legacy=self.legacy_port,
            search=self.search_port,
            key=key,
            policies=POLICIES,
            store=self.work / "shadow.db",
            search_db=self.work / "search.db",
        )
        with self._key_variable():
            config.parse(text.encode(), str(self.routes))  # never hand the gateway a bad file
        self.routes.write_text(text)

    @contextlib.contextmanager
    def _key_variable(self) -> Iterator[None]:
        """The key's variable set while the file is checked, as the gateway will have it."""
        if self.secret_env is None:
            yield
            return
        before = os.environ.get(self.secret_env)
        os.environ[self.secret_env] = self.secret
        try:
            yield
        finally:
            if before is None:
                del os.environ[self.secret_env]
            else:
                os.environ[self.secret_env] = before

    def spawn(self, name: str, argv: list[str]) -> None:
        env = {**os.environ, self.secret_env: self.secret} if self.secret_env else None
        with (self.work / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.work, env=env
            )
        self.processes.append((name, process))

    def wait_healthy(self, port: int, path: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        with Client(f"http://127.0.0.1:{port}") as client:
            while time.monotonic() < deadline:
                self.alive()
                with contextlib.suppress(NoAnswer):  # not listening yet
                    if client.get(path).status == 200:
                        return
                time.sleep(0.1)  # start-up of a child process: nothing to wait on but the port
        raise StepFailed(f"nothing healthy on port {port} after {seconds}s")

    def alive(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise StepFailed(f"the {name} process exited ({process.returncode})")

    def logs(self) -> str:
        return "".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}\n"
            for log in sorted(self.work.glob("*.log"))
        )

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def running(
    gateway: str, routes: Path, compose: Path | None, search: str | None, cdc: bool
) -> Target:
    """A stack that runs already; variables its routes file names and this shell lacks come
    from the compose file (`compose`, or the nearest one at or above the routes file)."""
    if not routes.is_file():
        raise StepFailed(f"{routes}: no such file: give the routes file the stack's gateway reads")
    compose = compose or compose_env.find_compose(routes.resolve().parent)
    filled = compose_env.fill(routes, compose, os.environ)
    try:
        config.load(routes)
    except ConfigError as exc:
        raise StepFailed(str(exc)) from None
    if filled:
        command = "docker compose exec -T gateway strangler token --sub you --roles admin"
    else:
        command = f"strangler token --routes {routes} --sub you --roles admin"
    return Target(
        gateway=gateway.rstrip("/"),
        routes=routes,
        search=search,
        sync_deadline=demo_cdc.RUNNING_SYNC_DEADLINE_SECONDS,
        cdc=cdc,
        token_command=command,
        alive=lambda: None,  # not the demo's processes: a dead one shows as a failed request
        notes=tuple(f"{name}: from {compose}, as compose sets it for the stack" for name in filled),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
