"""Memory over many Rego evaluations (issue #16): the leak, reproduced with regopy alone,
and the embedded engine keeping its memory flat.

Each case runs in a fresh interpreter (what a process loaded first is the cause, see
gateway/identity/rego.py) and reports how much its resident memory grew over EVALUATIONS
evaluations after a warm-up. The leak is ~23 KB an evaluation (~70 MB here); a sound
process stays within a few hundred KB, so the bound sits far from both.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT

POLICIES = ROOT / "policies"
EVALUATIONS = 3000
BOUND_BYTES = 12_000_000

_MEASURE = """
import gc

def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

def grown(evaluate, count) -> int:
    for i in range(300):
        evaluate(i)
    gc.collect()
    before = resident()
    for i in range(count):
        evaluate(i)
    gc.collect()
    return resident() - before
"""

_REGOPY = """
from pathlib import Path
rego = Interpreter()
rego.log_level = LogLevel.NONE
rego.add_module("authz.rego", (Path({policies!r}) / "authz.rego").read_text())
bundle = rego.build(None, ["strangler/authz"])

def evaluate(i):
    document = {{"attributes": {{"request": {{"http": {{"method": "GET"}}}}}},
                "parsed_path": ["products", str(i)], "claims": {{"sub": "bob"}}}}
    rego.set_input(Input(document))
    assert rego.query_bundle_entrypoint(bundle, "strangler/authz").ok()

print(grown(evaluate, {count}))
"""


def _grown(prelude: str, body: str) -> int:
    script = textwrap.dedent(prelude) + _MEASURE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


# libstdc++ loaded the way a C++ extension module loads it (RTLD_LOCAL), before regopy.
_LIBSTDCXX_FIRST = """
import ctypes
ctypes.CDLL("libstdc++.so.6")
"""


def test_regopy_alone_leaks_when_libstdcxx_was_loaded_first() -> None:
    """The reproduction without the gateway. When this fails, regopy no longer exports its
    allocator (or pairs it up): gateway/identity/rego.py can go, and this test with it."""
    grown = _grown(
        _LIBSTDCXX_FIRST + "from regopy import Input, Interpreter, LogLevel\n",
        _REGOPY.format(policies=str(POLICIES), count=EVALUATIONS),
    )
    assert grown > BOUND_BYTES, f"regopy grew only {grown} bytes: the leak is gone upstream"


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (_LIBSTDCXX_FIRST, ""),  # libstdc++ goes global
        ("", "import frozenlist\nassert list(frozenlist.FrozenList([1, 2])) == [1, 2]\n"),
    ],
    ids=["libstdc++-loaded-first", "nothing-c++-loaded-first"],
)
def test_regopy_through_gateway_rego_keeps_memory_flat(first: str, then: str) -> None:
    """Both of gateway/identity/rego.py's choices; in the second, a C++ module loaded afterwards
    (frozenlist) shares regopy's allocator and still works."""
    grown = _grown(
        first
        + "import gateway.identity.rego\nfrom gateway.identity.rego import Input, Interpreter, LogLevel\n"
        + then,
        _REGOPY.format(policies=str(POLICIES), count=EVALUATIONS),
    )
    assert grown < BOUND_BYTES, f"{grown} bytes over {EVALUATIONS} evaluations"


@pytest.mark.parametrize(
    "first",
    ["import gateway.identity.rego\n", "import aiohttp\n"],
    ids=["rego-first", "aiohttp-first"],
)
def test_embedded_policy_keeps_memory_flat_over_distinct_inputs(first: str) -> None:
    """Every input different, as with the decision cache off; gateway.identity.rego imported first
    (as the `strangler` command does), or aiohttp with its C++ frozenlist before it."""
    body = f"""
    import asyncio
    from gateway.identity.decision_input import build_input
    from gateway.identity.embedded_policy import EmbeddedPolicy

    engine = EmbeddedPolicy(Path({str(POLICIES)!r}))
    loop = asyncio.new_event_loop()

    def evaluate(i):
        document = build_input(
            method="GET", path=f"/products/{{i}}", query=f"q={{i}}".encode(),
            headers=[(b"host", b"shop.test"), (b"x-request-id", str(i).encode())],
            scheme="http", peer="127.0.0.1", claims={{"sub": "bob", "roles": ["buyer"]}},
            route="catalogue", target="legacy",
        )
        assert loop.run_until_complete(engine.decide(document)).allow

    print(grown(evaluate, {EVALUATIONS}))
    """
    grown = _grown(first + "from pathlib import Path\n", body)
    assert grown < BOUND_BYTES, f"{grown} bytes over {EVALUATIONS} decisions"
