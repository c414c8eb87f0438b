"""The embedded policy engine: the .rego files evaluated in-process by regopy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.identity.decision import (
    DEFAULT_PACKAGE,
    Decision,
    PolicyError,
    PolicyLoadError,
    check_package,
    to_decision,
)
from gateway.identity.rego import Bundle, Input, Interpreter, LogLevel, RegoError

log = logging.getLogger("strangler.policy")


@dataclass(frozen=True, slots=True)
class PolicyLoadFailure:
    at: float
    errors: list[str]


@dataclass(frozen=True, slots=True)
class _CompiledPolicy:
    interpreter: Interpreter
    bundle: Bundle
    version: str


# regopy reports errors as a tree, `(error 6:a.rego|19|1 (errormsg 16:this is unclosed) ...)`,
# the position a byte offset into the module; errors found while evaluating have none.
_REGO_ERROR = re.compile(
    r"\(error(?: \d+:(?P<file>[^|\s]+)\|(?P<at>\d+)\|\d+)?\s+\(errormsg \d+:(?P<msg>[^)]*)\)"
)


class EmbeddedPolicy:
    """Every .rego file of a directory (but `*_test.rego`) compiled once by regopy.

    Cost, measured with policies/authz.rego and a typical input (6 headers, 6 claims, a
    query): about 400 µs a decision, far over 50 µs. ~150 µs is regopy turning the Python
    input into a Rego term (one ctypes call per value), ~20 µs setting it, ~210 µs
    evaluating the package document (every rule of the package, as OPA's Data API does).
    It still runs inline on the event loop, not in a thread: with 16 decisions in flight,
    inline made 2,600 decisions/s; `asyncio.to_thread` with the lock a stateful interpreter
    needs (set the input, then query) made 750-970/s. The thread kept the loop free (the C
    evaluation releases the GIL) but the conversion holds the GIL, and each hop costs
    ~80 µs. Inline, a miss stalls the loop ~0.4 ms and the set-input/query pair cannot
    interleave; the decision cache answers repeated inputs in ~11 µs.

    Memory: each evaluation's C++ allocations are freed, and none is kept between
    evaluations, only because regopy comes from gateway/identity/rego.py (loaded otherwise, ~23 KB
    leaked per evaluation; issue #16).
    """

    def __init__(
        self,
        directory: Path,
        *,
        package: str = DEFAULT_PACKAGE,
        on_swap: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.package = check_package(package)
        self.on_swap = on_swap
        self.last_failure: PolicyLoadFailure | None = None
        self._stat = self._files_stat()
        self._current = self._compile()  # startup fails loudly on a bad policy

    @property
    def version(self) -> str:
        return self._current.version

    async def start(self) -> None:
        """Nothing to start: the policy is compiled when the engine is built."""

    async def close(self) -> None:
        """Nothing to close."""

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        current = self._current
        try:
            current.interpreter.set_input(Input(input))
            output = current.interpreter.query_bundle_entrypoint(current.bundle, self.package)
        except (RegoError, ValueError) as exc:  # ValueError: unconvertible input, bad output
            detail = "; ".join(_rego_errors(exc))
            raise PolicyError(f"policy evaluation failed: {detail}") from exc
        if not output.ok():
            raise PolicyError("policy evaluation failed (e.g. conflicting rule values)")
        result = output.results[0].expressions if output.results else []
        return to_decision(result[0] if result else None, "", self.package)

    def reload(self) -> bool:
        """Re-read the files; swap when they load and differ. True when swapped."""
        self._stat = self._files_stat()
        try:
            compiled = self._compile()
        except PolicyLoadError as exc:
            self.last_failure = PolicyLoadFailure(time.time(), exc.errors)
            log.error("policy reload rejected, keeping version %s\n%s", self.version, exc)
            return False
        self.last_failure = None
        if compiled.version == self.version:
            return False
        previous, self._current = self.version, compiled
        log.info("policy reloaded: version %s -> %s", previous, compiled.version)
        if self.on_swap is not None:
            self.on_swap(compiled.version)
        return True

    def changed(self) -> bool:
        return self._files_stat() != self._stat

    def _files(self) -> list[Path]:
        return sorted(
            p for p in self.directory.rglob("*.rego") if not p.name.endswith("_test.rego")
        )

    def _files_stat(self) -> list[tuple[str, int, int, int]]:
        stats = []
        for path in self._files():
            with contextlib.suppress(OSError):  # removed between listing and stat
                st = os.stat(path)
                stats.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return stats

    def _compile(self) -> _CompiledPolicy:
        sources: dict[str, str] = {}
        errors: list[str] = []
        for path in self._files():
            name = str(path.relative_to(self.directory))
            try:
                sources[name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"{name}: {exc}")
        if not sources and not errors:
            errors.append(f"{self.directory}: no .rego files")
        interpreter = Interpreter()
        interpreter.log_level = LogLevel.NONE  # errors come back in RegoError, not on stderr
        for name, text in sources.items():
            try:
                interpreter.add_module(name, text)
            except RegoError as exc:
                errors.extend(_rego_errors(exc, sources))
        if errors:
            raise PolicyLoadError(errors)
        try:
            bundle = interpreter.build(None, [self.package])
            # regopy compiles lazily: an evaluation is what finds unknown functions and the like
            interpreter.set_input(Input({}))
            probe = interpreter.query_bundle_entrypoint(bundle, self.package)
        except (RegoError, ValueError) as exc:
            raise PolicyLoadError(_rego_errors(exc, sources)) from exc
        if not bundle.ok() or not probe.ok():
            raise PolicyLoadError(["the policy does not compile"])
        if not probe.results or not probe.results[0].expressions:
            raise PolicyLoadError([f"no file defines package {self.package.replace('/', '.')}"])
        digest = hashlib.sha256()
        for name, text in sources.items():
            digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        return _CompiledPolicy(interpreter, bundle, digest.hexdigest()[:12])


def _rego_errors(exc: Exception, sources: Mapping[str, str] | None = None) -> list[str]:
    """regopy's error tree as `file:line:column: message` lines (or bare messages)."""
    # An error where a result should be reaches us as the JSON that failed to parse.
    text = exc.doc if isinstance(exc, json.JSONDecodeError) else str(exc)
    found = []
    for match in _REGO_ERROR.finditer(text):
        if match["file"] is None:
            found.append(match["msg"])
            continue
        name, at = match["file"], int(match["at"])
        before = (sources or {}).get(name, "").encode()[:at]
        line = before.count(b"\n") + 1
        column = at - (before.rfind(b"\n") + 1) + 1
        found.append(f"{name}:{line}:{column}: {match['msg']}")
    return found or [str(exc)]
