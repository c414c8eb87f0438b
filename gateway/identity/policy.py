"""Authorization decisions: one port, two engines chosen by name, an optional cache.

The gateway asks a `PolicyEngine` about each request's input document
(gateway/identity/decision_input.py) and gets a `Decision`. The policy contract is OPA's: a Rego
package (by default `strangler.authz`) whose document has `allow` (only a boolean true
allows), optionally `reason` (a string) and `override` (only a boolean true lets the caller
choose the upstream with X-Strangler-Target, gateway/rollout/assignment.py). An undefined document,
or one without `allow`, is a deny, not an error: that is what OPA answers for a package
that is not loaded.

Engines (`create_engine(kind, ...)`):
    "embedded"  EmbeddedPolicy: the .rego files evaluated in-process by regopy; the default
                when no OPA URL is configured. Reloads when the files change.
    "opa"       OpaPolicy: an OPA server's REST Data API, `POST /v1/data/<package>`.
`CachedPolicy` wraps either with a short-lived, bounded decision cache.

Errors:
    PolicyError       decide() could not get a decision: the engine failed, timed out, or
                      answered something that is not a decision. Never cached. The caller
                      applies the route's fail-closed (403) or fail-open rule.
    PolicyLoadError   the policy files cannot be loaded (parse or compile errors, no
                      files, the package is not defined). Raised when an EmbeddedPolicy is
                      built; on reload it is logged and the last good policy keeps serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from opa_client import AsyncOpaClient  # type: ignore[import-untyped]

from gateway.identity.rego import Bundle, Input, Interpreter, LogLevel, RegoError

log = logging.getLogger("strangler.policy")

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


# --- embedded: regopy in-process -----------------------------------------------------------


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


# --- opa: the REST Data API ---------------------------------------------------------------


class OpaPolicy:
    """An OPA server's Data API through opa-python-client's async client.

    One kept-alive aiohttp session for the engine's life; the timeout (default 250 ms)
    bounds each request, connecting included. The client's own retries are turned off: it
    would retry a 500 or a refused connection after 0.3 s and 0.6 s backoffs, far past any
    authorization budget, and the route's fail-closed/fail-open rule is the answer to a
    failure. Against a canned-answer server in another process on loopback, it measured
    within noise of a hand-written aiohttp call: 313 vs 294 µs a sequential decision, 6,030
    vs 5,790 decisions/s with 16 in flight (the server was the limit), so the client is kept.
    Its limits: OPA is addressed by host and port (no path prefix behind a proxy), and the
    timeout is the session's, the same for every request.
    """

    def __init__(self, url: str, *, package: str = DEFAULT_PACKAGE, timeout: float = 0.25) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid OPA URL {url!r}: expected http(s)://host:port")
        if parts.path.strip("/") or parts.query:
            # the client builds `{scheme}{host}:{port}/v1/...` itself
            raise ValueError(f"invalid OPA URL {url!r}: OPA is addressed by host and port only")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.url = f"{parts.scheme}://{host}:{parts.port or 8181}"
        self.package = check_package(package)
        self.timeout = timeout
        self._client = AsyncOpaClient(
            host=host,
            port=parts.port or 8181,
            ssl=parts.scheme == "https",
            retries=0,
            timeout=timeout,
        )
        self._stack = contextlib.AsyncExitStack()
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._stack.enter_async_context(self._client)
            self._started = True

    async def close(self) -> None:
        await self._stack.aclose()
        self._started = False

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        if not self._started:
            raise PolicyError("the OPA client is not started")
        try:
            answer = await self._client.query_rule(dict(input), self.package)
        except aiohttp.ClientResponseError as exc:
            raise PolicyError(f"OPA answered {exc.status} {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
            raise PolicyError(f"OPA unreachable at {self.url}: {exc!r}") from exc
        except (ValueError, TypeError) as exc:  # a body that is not JSON; an input not JSON
            raise PolicyError(f"OPA exchange failed: {exc}") from exc
        if not isinstance(answer, dict):
            raise PolicyError("OPA answered something that is not a JSON object")
        decision_id = answer.get("decision_id")
        return to_decision(
            answer.get("result"), decision_id if isinstance(decision_id, str) else "", self.package
        )


# --- the decision cache ------------------------------------------------------------------

# Per-request headers that would make every key unique without changing any sane decision:
# request ids and distributed-tracing context (W3C Trace Context, B3, vendors' variants).
VOLATILE_HEADERS = frozenset(
    {
        "x-request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "uber-trace-id",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "sentry-trace",
    }
)


def cache_key(input: Mapping[str, Any]) -> str:
    """A canonical serialisation of the input, volatile headers left out (not mutated)."""
    document: Mapping[str, Any] = input
    try:
        http = input["attributes"]["request"]["http"]
        headers = http["headers"]
    except (KeyError, TypeError):
        headers = {}
    if not VOLATILE_HEADERS.isdisjoint(headers):
        stable = {k: v for k, v in headers.items() if k not in VOLATILE_HEADERS}
        attributes = input["attributes"]
        request = {**attributes["request"], "http": {**http, "headers": stable}}
        document = {**input, "attributes": {**attributes, "request": request}}
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"the input is not a JSON document: {exc}") from exc


MAX_KEY_BYTES = 4096  # x cache_size (default 10,000): the decision cache stays under ~50 MB


class CachedPolicy:
    """Decisions remembered for `ttl` seconds, at most `max_entries` (least recently used
    out first), each for a key of at most `MAX_KEY_BYTES` (a larger request is decided, not
    remembered): the cache is bounded in bytes, not only in entries. Errors are never
    cached. A cached decision keeps its decision_id, the id of the evaluation it came from.
    Turn caching off by not wrapping the engine.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("the decision cache needs a positive ttl and max_entries")
        self.engine = engine
        self.ttl = ttl
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Decision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    def clear(self) -> None:
        """Forget every decision (e.g. when the policy changed)."""
        self._entries.clear()

    async def decide(self, input: Mapping[str, Any]) -> Decision:
        key = cache_key(input)
        return await self.decide_keyed(key, lambda: input, len(key))

    async def decide_keyed(
        self, key: Hashable, make_input: Callable[[], Mapping[str, Any]], size: int = 0
    ) -> Decision:
        """Like decide(), for a caller that has a cheaper key than the serialised input (it
        must determine the input completely), of about `size` bytes; the input is built only
        on a miss."""
        if size > MAX_KEY_BYTES:
            self.misses += 1
            return await self.engine.decide(make_input())
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            del self._entries[key]
        self.misses += 1
        decision = await self.engine.decide(make_input())
        self._entries[key] = (self._clock() + self.ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return decision
