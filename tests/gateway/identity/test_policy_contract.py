"""One contract for every policy engine: the same inputs, the same decisions.

Engines: `embedded` (regopy in-process), `opa` (the REST adapter against a loopback server
speaking OPA's Data API over the same files), and `opa-binary` (the REST adapter against a
real `opa run --server`, when an `opa` binary is on PATH).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from gateway.config.paths import normalise
from gateway.identity.decision import PolicyEngine, to_decision
from gateway.identity.decision_input import build_input
from gateway.identity.policy import create_engine
from tests.support import ROOT
from tests.support.opa_server import serve_opa

pytestmark = pytest.mark.anyio

POLICIES = ROOT / "policies"

BUYER = {"sub": "alice", "roles": ["buyer"]}
ADMIN = {"sub": "root", "roles": ["admin"]}
ANONYMOUS: dict[str, Any] = {}

# name, method, raw path, claims, allowed, reason (None: no reason)
CASES: list[tuple[str, str, str, Mapping[str, Any], bool, str | None]] = [
    ("search is public", "GET", "/search?q=shoes", ANONYMOUS, True, None),
    ("search subpaths are public", "GET", "/search/suggest", ANONYMOUS, True, None),
    ("products list, HEAD", "HEAD", "/products", ANONYMOUS, True, None),
    ("product item", "GET", "/products/42", ANONYMOUS, True, None),
    ("health", "GET", "/health", ANONYMOUS, True, None),
    ("dot-segments resolve first", "GET", "/orders/../products", ANONYMOUS, True, None),
    ("empty segments collapse first", "GET", "//products", ANONYMOUS, True, None),
    ("trailing slash", "GET", "/products/", ANONYMOUS, False, "no rule allows GET /products/"),
    ("case-sensitive", "GET", "/PRODUCTS", ANONYMOUS, False, "no rule allows GET /PRODUCTS"),
    ("public means read", "POST", "/search", ANONYMOUS, False, "no rule allows POST /search"),
    ("anonymous orders", "GET", "/orders", ANONYMOUS, False, "orders need a signed-in buyer"),
    ("buyer lists orders", "GET", "/orders", BUYER, True, None),
    ("buyer places an order", "POST", "/orders", BUYER, True, None),
    ("no order items yet", "GET", "/orders/7", BUYER, False, "no rule allows GET /orders/7"),
    ("admin is no buyer", "GET", "/orders", ADMIN, False, "orders need a signed-in buyer"),
    ("own user record", "GET", "/users/alice", BUYER, True, None),
    (
        "another user's record",
        "GET",
        "/users/bob",
        BUYER,
        False,
        "a user's record is readable by that user or an admin",
    ),
    ("admin reads any record", "GET", "/users/bob", ADMIN, True, None),
    ("segments are decoded", "GET", "/users/jo%20ann", {"sub": "jo ann"}, True, None),
    (
        "buyer writes a product",
        "POST",
        "/products",
        BUYER,
        False,
        "product writes need the admin role",
    ),
    ("admin creates a product", "POST", "/products", ADMIN, True, None),
    ("admin updates a product", "PUT", "/products/1", ADMIN, True, None),
    ("admin deletes a product", "DELETE", "/products/1", ADMIN, True, None),
    ("admin API for admins", "GET", "/_strangler/routes", ADMIN, True, None),
    (
        "admin API for others",
        "GET",
        "/_strangler/routes",
        BUYER,
        False,
        "the admin API needs the admin role",
    ),
    ("admin API is case-sensitive", "GET", "/_STRANGLER/routes", ADMIN, False, None),
    ("roles must be a list", "DELETE", "/products/1", {"sub": "x", "roles": "admin"}, False, None),
    ("default deny", "POST", "/foo", ADMIN, False, "no rule allows POST /foo"),
]


def request_input(method: str, raw: str, claims: Mapping[str, Any]) -> dict[str, Any]:
    raw_path, _, query = raw.partition("?")
    return build_input(
        method=method,
        path=normalise(raw_path.encode()),
        query=query.encode(),
        headers=[(b"host", b"shop.test"), (b"x-request-id", b"r-1"), (b"accept", b"*/*")],
        scheme="http",
        peer="127.0.0.1",
        claims=claims,
        route="shop",
        target="legacy",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def opa_binary(binary: str) -> AsyncIterator[str]:
    """`opa run --server` on loopback, serving the policy directory."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        *("run", "--server", "--addr", f"127.0.0.1:{port}", str(POLICIES)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # A readiness probe for another process (it logs no line that means "listening"):
        # connect until it accepts, bounded, and fail with its output when it exits.
        async with asyncio.timeout(15):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if process.returncode is not None:
                        assert process.stderr is not None
                        pytest.fail(f"opa exited: {(await process.stderr.read()).decode()}")
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture(params=["embedded", "opa", "opa-binary"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[PolicyEngine]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "embedded":
            chosen = create_engine("embedded", policies=POLICIES, url=None)
        elif request.param == "opa":
            server = await stack.enter_async_context(serve_opa(POLICIES))
            chosen = create_engine("opa", policies=None, url=server.url, timeout=5)
        else:
            binary = shutil.which("opa")
            if binary is None:
                pytest.skip("no `opa` binary on PATH: the real-OPA leg of the contract is skipped")
            url = await stack.enter_async_context(opa_binary(binary))
            chosen = create_engine("opa", policies=None, url=url, timeout=5)
        await chosen.start()
        stack.push_async_callback(chosen.close)
        yield chosen


@pytest.mark.parametrize(
    ("method", "raw", "claims", "allowed", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_decisions(
    engine: PolicyEngine,
    method: str,
    raw: str,
    claims: Mapping[str, Any],
    allowed: bool,
    reason: str | None,
) -> None:
    decision = await engine.decide(request_input(method, raw, claims))
    assert decision.allow is allowed
    if allowed:
        assert decision.reason is None
    elif reason is not None:
        assert decision.reason == reason
    else:
        assert decision.reason  # every deny of the default policy says why
    assert decision.decision_id


async def test_every_decision_gets_its_own_id(engine: PolicyEngine) -> None:
    document = request_input("GET", "/products", ANONYMOUS)
    first, second = await engine.decide(document), await engine.decide(document)
    assert first.allow and second.allow
    assert first.decision_id != second.decision_id


@pytest.mark.parametrize(
    ("document", "allowed", "reason"),
    [
        ({"allow": True}, True, None),
        ({"allow": True, "reason": "ok"}, True, "ok"),
        ({"allow": False, "reason": "no"}, False, "no"),
        ({"allow": "true"}, False, None),  # only a boolean true allows
        ({"allow": 1}, False, None),
        ({"allow": [True]}, False, None),
        ({"allow": False, "reason": ["not", "a", "string"]}, False, None),
        ({"reason": "half a policy"}, False, "policy without allow: data.strangler.authz"),
        (None, False, "policy undefined: data.strangler.authz"),
        (True, False, "policy without allow: data.strangler.authz"),  # a rule, not a package
    ],
)
def test_reading_a_decision_document(document: object, allowed: bool, reason: str | None) -> None:
    decision = to_decision(document, "", "strangler/authz")
    assert (decision.allow, decision.reason) == (allowed, reason)
    assert decision.decision_id
    assert to_decision(document, "given", "strangler/authz").decision_id == "given"
