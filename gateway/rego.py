"""regopy, loaded so that every C++ allocation it makes is freed by the allocator that made it.

Import regopy's names from here, never from regopy itself.

regopy's `librego_shared.so` (1.5.2) defines and exports the global C++ `operator new` and
`operator delete` (snmalloc's, built in by trieste) and is loaded by ctypes with RTLD_LOCAL.
Which allocator a call reaches then depends on what the process loaded first:

- libstdc++ not loaded yet: it arrives as librego's dependency, in librego's lookup scope,
  and binds to librego's allocator; librego's inline code does too. Rego pairs up.
- libstdc++ already loaded by a C++ extension (aiohttp imports frozenlist, a C++ module):
  libstdc++ was bound to its own malloc-based `operator new` when it was loaded, while
  librego's inline code binds to snmalloc. Memory allocated on one side and freed on the
  other is lost: about 23 KB per `query_bundle_entrypoint` with policies/authz.rego, for the
  life of the process (freeing the interpreter does not give it back). gateway/policy.py
  imported aiohttp before regopy, so every gateway process leaked on every decision
  (issue #16: 13 MB a minute under load; tests/gateway/test_policy_memory.py reproduces it
  with regopy alone).

Loading libstdc++ into the global scope first settles it whatever came before: a library's
symbols are looked up in the global scope before its own, so librego's `operator new` and
`delete` calls bind to libstdc++'s, the same pair libstdc++ and every other C++ extension
use, and snmalloc's copies go unused. It costs about 10% of a decision (475 -> 525 µs a
miss, measured in the README), the price of one allocator for the whole process. Taking
the other pair (regopy loaded before any C++ module, everything on snmalloc) was as fast
but depends on import order and would leave later C++ extensions with the mismatch.

When regopy is already loaded this is too late to help; nothing in this repository loads
it elsewhere. On platforms without an ELF libstdc++ (macOS, Windows) nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

# The soname librego_shared.so links against (its DT_NEEDED entry).
LIBSTDCXX = "libstdc++.so.6"


def _share_libstdcxx() -> None:
    if "regopy" in sys.modules or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):  # no libstdc++ here: regopy brings its own or fails
        ctypes.CDLL(LIBSTDCXX, mode=os.RTLD_GLOBAL)


_share_libstdcxx()

from regopy import (  # type: ignore[import-untyped]  # noqa: E402 (after the loading above)
    Bundle,
    Input,
    Interpreter,
    LogLevel,
    RegoError,
)

__all__ = ["LIBSTDCXX", "Bundle", "Input", "Interpreter", "LogLevel", "RegoError"]
