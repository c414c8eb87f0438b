"""The demo's moves of /search, made in the routes file the way a user makes them.

Forward and back one state at a time with `strangler routes promote | rollback` (the same
code: cli/routes/step.py's `step_file`), and hand edits, such as a canary's next
share, which are first shown with `strangler routes diff` and then saved in one rename.
After every save the demo waits until the gateway serves exactly the saved file (its
version is the sha256 of the bytes) and checks the route's state as the gateway derived it
(`GET /_strangler/routes`), so no step runs against the previous table.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.routes.step import step_file
from common.validation import ConfigError
from demo.client import Client, Tokens
from demo.progress import StepFailed, StepLog
from gateway.config import table as config
from gateway.config.rollout import targets_text
from gateway.config.routes import Route
from gateway.config.table import RouteTable
from gateway.rollout.diff import diff
from gateway.rollout.editor import EditError, set_weights, write_atomically
from gateway.rollout.promotion import Move, PromotionError, edit, find

ROUTE = "search"  # the route the demo moves, in every routes file it drives
NEW = "search"  # the upstream it moves the route to
RELOAD_SECONDS = 15.0  # the compose gateway polls its file every second


def load(path: Path) -> RouteTable:
    try:
        return config.load(path)
    except ConfigError as exc:
        raise StepFailed(str(exc)) from None


class RoutesFile:
    def __init__(
        self,
        path: Path,
        client: Client,
        tokens: Tokens,
        progress: StepLog,
        alive: Callable[[], None],
    ) -> None:
        self.path = path
        self.client = client
        self.tokens = tokens
        self.progress = progress
        self.alive = alive

    def table(self) -> RouteTable:
        return load(self.path)

    def route(self, table: RouteTable | None = None) -> Route:
        try:
            return find(table or self.table(), ROUTE)
        except PromotionError as exc:
            raise StepFailed(f"{exc}: the demo moves a route named {ROUTE!r}") from None

    @property
    def monolith(self) -> str:
        monolith = self.table().rollout.monolith
        if monolith is None:
            raise StepFailed(f"{self.path}: no monolith: set `default:` or rollout: monolith")
        return monolith

    def promote(self, to: str | None = None) -> None:
        self._step(backwards=False, to=to)

    def rollback(self) -> None:
        self._step(backwards=True)

    def _step(self, backwards: bool, to: str | None = None) -> None:
        command = f"strangler routes {'rollback' if backwards else 'promote'} {ROUTE}"
        command += f" --to {to}" if to else ""
        self.progress.say(f"$ {command} --routes {self.path}")
        try:
            outcome = asyncio.run(step_file(self.path, ROUTE, backwards=backwards, to=to))
        except (PromotionError, ConfigError) as exc:
            raise StepFailed(f"{command}: {exc}") from None
        self.progress.say("\n".join(outcome.lines(str(self.path))))
        if not outcome.written:
            raise StepFailed(f"{command} did not move the route")
        self.wait_served(outcome.move.after)

    def set_weights(self, weights: dict[str, int]) -> None:
        """Edit the route's `upstream:` to these weights, as a user edits the file."""
        try:
            text = set_weights(self.path.read_text(), ROUTE, weights)
        except EditError as exc:
            raise StepFailed(f"{self.path}: {exc}") from None
        shares = ", ".join(f"{name}: {weight}" for name, weight in weights.items())
        self.save(text, f"upstream: {{{shares}}}")

    def reset(self) -> bool:
        """Put the route back on the monolith alone in one edit; False when it is there."""
        table = self.table()
        route = self.route(table)
        if route.rollout.state == "legacy":
            return False
        monolith = self.monolith
        state = route.rollout.state
        move = Move(ROUTE, state, "legacy", upstream=monolith, drop_shadow=route.shadow is not None)
        try:
            text = edit(self.path.read_text(), route, move)
        except EditError as exc:
            raise StepFailed(f"{self.path}: {exc}") from None
        self.save(text, f"upstream: {monolith}, no shadow (an earlier run left it {state})")
        return True

    def save(self, text: str, what: str) -> None:
        """Show what the edit changes (`strangler routes diff`), then save it."""
        before = self.table()
        try:
            after = config.parse(text.encode(), str(self.path))
        except ConfigError as exc:
            raise StepFailed(f"the edit would not validate, so it is not saved:\n{exc}") from None
        self.progress.say(f"edit {self.path}: {what}")
        self.progress.say(f"$ strangler routes diff {self.path.name} {self.path.name}.edited")
        self.progress.say("\n".join(diff(before, after)))
        write_atomically(self.path, text)
        self.wait_served(self.route(after).rollout.state)

    def wait_served(self, state: str) -> None:
        """Wait until the gateway serves the file as it is now; check the route's state."""
        version = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        deadline = time.monotonic() + RELOAD_SECONDS
        while True:
            self.alive()
            served = self.served()
            if served["version"] == version:
                break
            if time.monotonic() > deadline:
                rejected = served.get("last_rejected") or {}
                errors = "\n".join(rejected.get("errors") or ["(no rejected edit either)"])
                raise StepFailed(
                    f"after {RELOAD_SECONDS:.0f}s the gateway serves version {served['version']}"
                    f" ({served['source']}), not {version}, the version of {self.path}: is it "
                    f"the file the gateway reads? Its last rejected edit:\n{errors}"
                )
            time.sleep(0.05)  # the gateway polls the file; the demo polls the admin API
        routes = {entry["name"]: entry for entry in served["routes"]}
        entry = routes.get(ROUTE, {})
        if entry.get("state") != state:
            raise StepFailed(
                f"the gateway says route {ROUTE!r} is {entry.get('state')}, not {state}"
            )
        route = self.route()
        targets = targets_text(route.upstream, route.rollout)
        shadow = f", shadow to {route.shadow.upstream}" if route.shadow else ""
        self.progress.say(
            f"the gateway serves version {version}: route {ROUTE!r} is {state} ({targets}{shadow})"
        )

    def served(self) -> dict[str, Any]:
        answer = self.client.get("/_strangler/routes", self.tokens.admin())
        if answer.status != 200:
            raise StepFailed(f"GET /_strangler/routes answered {answer.brief()}")
        served: dict[str, Any] = answer.json()
        return served
