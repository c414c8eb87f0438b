"""`strangler demo`: move /search off the monolith in the small, reversible steps of a real
migration, checking each one.

    0  the stack: started here (embedded defaults), or a running one (`--against URL`)
    1  all traffic to the monolith
    2  shadow /search to the new service: the match rate, a deliberate difference and back
    3  canary 10% -> 50% of the users, each sticky, and only monolith users move
    4  a user writes a product through the monolith and searches at once (read-your-writes)
    5  migrate /search fully
    6  roll back one step, then forward again

Routes move with `strangler routes promote | rollback` and one edit by hand (the canary's
50%), in the routes file the gateway reads and reloads. `--check` runs the story without
waiting at the end and exits 1 at the first failed step, naming it; without it, a stack of
the demo's own keeps running for you to try until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from demo import canary as demo_canary
from demo import cdc as demo_cdc
from demo.client import Client, Reply, Tokens
from demo.progress import StepFailed, StepLog
from demo.routes import NEW, ROUTE, RoutesFile, load
from demo.shadow import TRAFFIC, Shadow
from demo.stack import LocalStack, Target, running

QUERY = "/search?q=lamp&size=5"
COMPOSE_ROUTES = "deploy/routes.compose.yaml"
SOME = 50  # users asked once the route has one upstream: nothing is hashed then
_FAILURES = (StepFailed, OSError)  # a request without an answer is a StepFailed


class Story:
    def __init__(self, target: Target, progress: StepLog) -> None:
        self.target = target
        self.progress = progress
        self.clients = contextlib.ExitStack()
        self.client = self.clients.enter_context(Client(target.gateway))
        self.tokens: Tokens  # set by connect(), once the routes file has been read
        self.routes: RoutesFile
        self.monolith = ""

    def run(self) -> None:
        self.connect()
        self.all_to_the_monolith()
        self.shadow()
        at10, at50 = self.canary()
        self.write_and_search(at50)
        self.migrate(at50)
        self.back_and_forth(at10)

    def step(self, number: str, title: str) -> None:
        self.progress.step(number, title)

    def say(self, text: str) -> None:
        self.progress.say(text)

    def connect(self) -> None:
        """The rest of step 0 (0.4): the gateway serves the routes file and takes our tokens."""
        target = self.target
        for note in target.notes:
            self.say(note)
        health = self.client.get("/_strangler/health")
        if health.status != 200:
            raise StepFailed(f"GET /_strangler/health answered {health.brief()}")
        self.tokens = Tokens(load(target.routes))
        self.routes = RoutesFile(
            target.routes, self.client, self.tokens, self.progress, target.alive
        )
        self.monolith = self.routes.monolith
        answer = self.client.get("/_strangler/routes", self.tokens.admin())
        if answer.status == 401:
            raise StepFailed(
                f"the gateway refused a token signed with the dev key of {target.routes}: "
                "it uses another key (compose: STRANGLER_DEV_HS256_SECRET, see .env)"
            )
        self.routes.wait_served(self.routes.route().rollout.state)
        page = self.client.get("/_strangler/")
        data = self.client.get("/_strangler/dashboard.json", self.tokens.admin())
        if page.status != 200 or data.status != 200:
            raise StepFailed(f"the dashboard answered {page.status}, its data {data.brief()}")
        self.say(f"dashboard: {target.gateway}/_strangler/  (it asks for an admin token:")
        self.say(f"    {target.token_command})")

    def all_to_the_monolith(self) -> None:
        self.step("1", "All traffic goes to the monolith")
        self.routes.reset()
        self.expect(QUERY, self.monolith)
        self.expect("/products/1", self.monolith)

    def shadow(self) -> None:
        monolith = self.monolith
        search = (
            self.clients.enter_context(Client(self.target.search)) if self.target.search else None
        )
        shadow = Shadow(self.client, search, self.tokens, self.progress)
        self.step("2", f"Shadow /search to the new service: {monolith} answers, {NEW} is compared")
        self.routes.promote(to=NEW)

        self.step("2.1", f"Play {len(TRAFFIC)} searches: the shadow report shows the match rate")
        shadow.expect_all_identical(shadow.play(monolith))

        missing = shadow.toggles_missing()
        self.step("2.2", "Turn on rounded prices in the new service: the differing field shows up")
        if missing is not None:
            self.progress.skip(missing)
            self.step("2.3", "Turn rounded prices off again: the difference goes away")
            self.progress.skip("as 2.2")
            return
        shadow.toggle("on")
        shadow.expect_price_difference(shadow.play(monolith))

        self.step("2.3", "Turn rounded prices off again: the difference goes away")
        shadow.toggle("off")
        shadow.expect_all_identical(shadow.play(monolith))

    def canary(self) -> tuple[demo_canary.Assignment, demo_canary.Assignment]:
        users, monolith = len(demo_canary.USERS), self.monolith
        self.step("3", f"Canary: 10% of users to the new service ({users} users, each asks twice)")
        self.routes.promote()
        at10 = demo_canary.survey(self.client, self.tokens, rounds=2)
        demo_canary.check_share(self.progress, at10, monolith, NEW, 10, rounds=2)

        self.step("3.1", "Raise the canary to 50%: users move only from the monolith to it")
        before = self.routes.route()
        self.routes.set_weights({monolith: 50, NEW: 50})
        at50 = demo_canary.survey(self.client, self.tokens, rounds=2)
        demo_canary.check_share(self.progress, at50, monolith, NEW, 50, rounds=2)
        demo_canary.check_moves(
            self.progress, at10, at50, before, self.routes.route(), monolith, NEW
        )
        return at10, at50

    def write_and_search(self, at50: demo_canary.Assignment) -> None:
        self.step(
            "4", "A user writes a product through the monolith and immediately searches for it"
        )
        if not self.target.cdc:
            self.progress.skip("--no-cdc: this stack has no CDC bridge to carry the write")
            return
        user = next(u for u in demo_canary.USERS if at50[u] == NEW)
        self.say(f"{user} is one of the users the canary sends to {NEW}")
        demo_cdc.write_then_search(
            self.client, self.tokens, self.progress, user, NEW, self.target.sync_deadline
        )

    def migrate(self, at50: demo_canary.Assignment) -> None:
        self.step("5", "Migrate /search fully: the new service answers everyone")
        user = next(u for u in demo_canary.USERS if at50[u] == self.monolith)
        token = self.tokens.of(user, "buyer")
        before = self.expect(QUERY, self.monolith, token)
        self.routes.promote()
        after = self.expect(QUERY, NEW, token)
        if after.body != before.body:
            raise StepFailed(f"{NEW}'s answer to {user} differs from the monolith's")
        self.say(f"{user}: the same bytes from {NEW} as from {self.monolith} ({len(after.body)})")
        seen = demo_canary.survey(self.client, self.tokens, 1, demo_canary.USERS[:SOME])
        demo_canary.check_all(self.progress, seen, NEW)
        self.say("everything else still goes to the monolith:")
        self.expect("/products/1", self.monolith)

    def back_and_forth(self, at10: demo_canary.Assignment) -> None:
        self.step("6", "Roll back one step: the canary's last share, the same users as before")
        self.routes.rollback()
        seen = demo_canary.survey(self.client, self.tokens, rounds=1)
        demo_canary.check_share(self.progress, seen, self.monolith, NEW, 10, rounds=1)
        demo_canary.check_same(self.progress, seen, at10, "at 10% in step 3")

        self.step("6.1", "Forward again: /search migrated")
        self.routes.promote()
        seen = demo_canary.survey(self.client, self.tokens, 1, demo_canary.USERS[:SOME])
        demo_canary.check_all(self.progress, seen, NEW)

    def expect(self, path: str, upstream: str, token: str | None = None) -> Reply:
        answer = self.client.get(path, token)
        self.say(f"GET {path}: HTTP {answer.status}, X-Strangler-Upstream: {answer.upstream}")
        if answer.status != 200 or answer.upstream != upstream:
            raise StepFailed(f"expected 200 from {upstream!r}, got {answer.brief()}")
        if path.startswith("/search"):
            data = answer.json()
            names = ", ".join(r["name"] for r in data["results"][:3])
            self.say(f"{data['total']} products match; first: {names}")
        return answer


def main(ns: argparse.Namespace) -> int:
    misplaced = _misplaced(ns)
    if misplaced:
        print(f"strangler demo: {misplaced}", file=sys.stderr)
        return 2
    progress = StepLog()
    with contextlib.ExitStack() as stack:
        local: LocalStack | None = None
        try:
            if ns.against:
                routes = Path(ns.routes or COMPOSE_ROUTES)
                progress.step("0", connect_title(ns.against, routes))
                compose = Path(ns.compose) if ns.compose else None
                target = running(ns.against, routes, compose, ns.search_url, not ns.no_cdc)
            else:
                work = Path(
                    ns.workdir
                    or stack.enter_context(tempfile.TemporaryDirectory(prefix="strangler-"))
                )
                local = LocalStack(work, ns.gateway_port, ns.legacy_port, ns.search_port)
                stack.callback(local.stop)
                target = local.start(progress)
                progress.step("0.4", connect_title(target.gateway, target.routes))
            story = Story(target, progress)
            stack.callback(story.clients.close)
            story.run()
        except _FAILURES as exc:
            print(f"\n{progress.failure(exc)}", file=sys.stderr)
            if local is not None:
                print(f"Logs are in {local.work}/*.log", file=sys.stderr)
                if ns.check:
                    print(local.logs(), file=sys.stderr)
            return 1
        if ns.check:
            print("\nAll steps verified.")
        elif local is not None:
            wait_for_interrupt(local, target)
        return 0


def connect_title(gateway: str, routes: Path) -> str:
    return f"Connect to the gateway at {gateway}, reading {routes}"


def _misplaced(ns: argparse.Namespace) -> str | None:
    """Options of the other mode: the demo's own stack, or --against a running one."""
    own = ("workdir", "gateway_port", "legacy_port", "search_port")
    against = ("routes", "compose", "search_url", "no_cdc")
    wrong = [name for name in (own if ns.against else against) if getattr(ns, name)]
    if not wrong:
        return None
    flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
    if ns.against:
        return f"{flags}: for the demo's own stack, not with --against"
    return f"{flags}: only with --against URL"


def wait_for_interrupt(local: LocalStack, target: Target) -> None:
    gw, routes = target.gateway, target.routes
    print(
        f"\nThe stack keeps running. Try it:\n"
        f"    curl -i '{gw}/search?q=steel&category=kitchen'\n"
        f"    curl -i {gw}/products/42\n"
        f"    TOKEN=$({target.token_command})\n"
        f'    curl -s -H "Authorization: Bearer $TOKEN" {gw}/_strangler/routes\n'
        f"    open {gw}/_strangler/ and paste $TOKEN: routes, traffic, shadow, CDC lag\n"
        f"    strangler routes rollback {ROUTE} --routes {routes}   # one step back\n"
        f"    strangler shadow report --routes {routes}\n"
        f"    strangler cdc status --status-file {local.work / 'cdc-status.json'}\n"
        f"Press Ctrl-C to stop."
    )
    stopped = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopped and all(p.poll() is None for _, p in local.processes):
        time.sleep(0.5)
    print("\nStopping.")
