"""The policy port: a `PolicyEngine` answers an input document with a `Decision`.

The policy contract is OPA's: a Rego package (by default `strangler.authz`) whose document has
`allow` (only a boolean true allows), optionally `reason` (a string) and `override` (only a
boolean true lets the caller choose the upstream with X-Strangler-Target,
gateway/rollout/assignment.py). An undefined document, or one without `allow`, is a deny, not
an error: that is what OPA answers for a package that is not loaded (`to_decision`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_PACKAGE = "strangler/authz"
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str | None = None
    decision_id: str = ""  # OPA's decision_id when it gives one, else one we generate
    override: bool = False  # the caller may choose the upstream (X-Strangler-Target)


class PolicyError(Exception):
    """No decision: the engine failed, timed out or answered garbage."""


class PolicyLoadError(Exception):
    """The policy files cannot be loaded; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class PolicyEngine(Protocol):
    async def decide(self, input: Mapping[str, Any]) -> Decision:
        """The decision for one input document; raises PolicyError."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def check_package(package: str) -> str:
    """A package path as OPA's Data API writes it (`strangler/authz`), or ValueError."""
    if not _PACKAGE.fullmatch(package):
        raise ValueError(f"invalid policy package {package!r}: expected a path like a/b")
    return package


def to_decision(document: object, decision_id: str, package: str) -> Decision:
    """Read a package document; undefined or malformed documents deny."""
    decision_id = decision_id or str(uuid.uuid4())
    if not isinstance(document, dict) or "allow" not in document:
        what = "undefined" if document is None else "without allow"
        return Decision(False, f"policy {what}: data.{package.replace('/', '.')}", decision_id)
    reason = document.get("reason")
    return Decision(
        document["allow"] is True,
        reason if isinstance(reason, str) else None,
        decision_id,
        override=document.get("override") is True,
    )
