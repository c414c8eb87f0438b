"""Authorization decisions: one port, two engines chosen by name, an optional cache.

The gateway asks a `PolicyEngine` (gateway/identity/decision.py, with the policy contract)
about each request's input document (gateway/identity/decision_input.py) and gets a
`Decision`. This module chooses the engine; the names the gateway uses are importable here.

Engines (`create_engine(kind, ...)`):
    "embedded"  EmbeddedPolicy (embedded_policy.py): the .rego files evaluated in-process
                by regopy; the default when no OPA URL is configured. Reloads when the
                files change.
    "opa"       OpaPolicy (opa.py): an OPA server's REST Data API,
                `POST /v1/data/<package>`.
`CachedPolicy` (decision_cache.py) wraps either with a short-lived, bounded decision cache.

Errors:
    PolicyError       decide() could not get a decision: the engine failed, timed out, or
                      answered something that is not a decision. Never cached. The caller
                      applies the route's fail-closed (403) or fail-open rule.
    PolicyLoadError   the policy files cannot be loaded (parse or compile errors, no
                      files, the package is not defined). Raised when an EmbeddedPolicy is
                      built; on reload it is logged and the last good policy keeps serving.
"""

from __future__ import annotations

from pathlib import Path

from gateway.identity.decision import (
    DEFAULT_PACKAGE,
    Decision,
    PolicyEngine,
    PolicyError,
    PolicyLoadError,
)
from gateway.identity.decision_cache import VOLATILE_HEADERS, CachedPolicy
from gateway.identity.embedded_policy import EmbeddedPolicy
from gateway.identity.opa import OpaPolicy

# The names the gateway imports from here (the guard, the split chooser).
__all__ = [
    "VOLATILE_HEADERS",
    "CachedPolicy",
    "Decision",
    "EmbeddedPolicy",
    "OpaPolicy",
    "PolicyEngine",
    "PolicyError",
    "PolicyLoadError",
    "create_engine",
]


def create_engine(
    kind: str,
    *,
    policies: Path | None,
    url: str | None,
    package: str = DEFAULT_PACKAGE,
    timeout: float = 0.25,
) -> PolicyEngine:
    """The engine named `kind` ("embedded" or "opa"); ValueError for a bad configuration."""
    if kind == "embedded":
        if policies is None:
            raise ValueError("the embedded policy engine needs a policy directory")
        return EmbeddedPolicy(policies, package=package)
    if kind == "opa":
        if url is None:
            raise ValueError("the opa policy engine needs the OPA server's URL")
        return OpaPolicy(url, package=package, timeout=timeout)
    raise ValueError(f"unknown policy engine {kind!r}: expected 'embedded' or 'opa'")
