"""Environment settings, read once at start-up with types (12-factor)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    routes: str = "routes.yaml"  # STRANGLER_ROUTES
    reload_interval: float = 1.0  # STRANGLER_RELOAD_INTERVAL, seconds; 0 disables watching
    access_log: bool = True  # STRANGLER_ACCESS_LOG=0 turns the per-request JSON line off

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        try:
            interval = float(env.get("STRANGLER_RELOAD_INTERVAL", "1.0"))
        except ValueError as exc:
            raise ValueError("STRANGLER_RELOAD_INTERVAL must be a number of seconds") from exc
        return cls(
            routes=env.get("STRANGLER_ROUTES", "routes.yaml"),
            reload_interval=interval,
            access_log=env.get("STRANGLER_ACCESS_LOG", "1").lower() not in ("0", "false", "no"),
        )
