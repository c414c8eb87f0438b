"""regopy, loaded so that every C++ allocation it makes is freed by the allocator that made it.

Import regopy's names from here, never from regopy itself. The `strangler` command
(cli/__init__.py) imports this module before anything else
of the gateway's, so in a gateway process it runs before any C++ extension is loaded.
Processes that never decide (the shadow worker, the CDC bridge) do not load regopy at all.

regopy's `librego_shared.so` (1.5.2) defines and exports the global C++ `operator new` and
`operator delete` (snmalloc's, built in by trieste) and is loaded by ctypes with RTLD_LOCAL.
Which allocator a call reaches then depends on what the process loaded first:

- libstdc++ not loaded yet: it arrives as librego's dependency and binds to librego's
  allocator, as librego's own code does. Rego pairs up.
- libstdc++ already loaded by a C++ extension (aiohttp imports frozenlist, a C++ module):
  libstdc++ was bound to its own malloc-based `operator new` when it was loaded, while
  librego's inline code binds to snmalloc. Memory allocated on one side and freed on the
  other is lost: about 23 KB per `query_bundle_entrypoint` with policies/authz.rego, for the
  life of the process (freeing the interpreter gives none of it back). gateway/identity/policy.py
  imported aiohttp before regopy, so every gateway process leaked on every decision (issue
  #16: 13 MB a minute under load; tests/gateway/test_policy_memory.py reproduces it with
  regopy alone).

A library's symbols are looked up in the global scope before its own, so one library loaded
with RTLD_GLOBAL before regopy decides the pair for every C++ caller in the process:

- nothing C++ loaded yet: librego itself goes global. Its allocator then serves libstdc++
  and every C++ extension loaded later, as well as regopy.
- libstdc++ already loaded (bound to its own allocator): libstdc++ goes global, and librego's
  calls bind to it too; snmalloc's copies go unused. Sound, but a decision costs about 25%
  more (glibc's malloc against snmalloc, measured in docs/identity.md).

When regopy is already loaded this is too late to help; nothing in this repository loads
it elsewhere. On platforms without ELF shared libraries (macOS, Windows) nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys

# The soname librego_shared.so links against (its DT_NEEDED entry), and regopy's library.
LIBSTDCXX = "libstdc++.so.6"
LIBREGO = "librego_shared.so"


def allocator_library() -> str | None:
    """The library to load globally before regopy (see above); None: leave it to regopy."""
    if "regopy" in sys.modules or not sys.platform.startswith("linux"):
        return None
    with open("/proc/self/maps") as maps:
        if any("/libstdc++" in line for line in maps):
            return LIBSTDCXX
    spec = importlib.util.find_spec("regopy")
    if spec is None or not spec.submodule_search_locations:
        return None  # not installed: the import below says so
    rego = os.path.join(spec.submodule_search_locations[0], LIBREGO)
    return rego if os.path.exists(rego) else LIBSTDCXX


def _load_allocator() -> None:
    library = allocator_library()
    if library is not None:
        with contextlib.suppress(OSError):  # not loadable here: regopy's own loading decides
            ctypes.CDLL(library, mode=os.RTLD_GLOBAL)


_load_allocator()

from regopy import (  # type: ignore[import-untyped]  # noqa: E402 (after the loading above)
    Bundle,
    Input,
    Interpreter,
    LogLevel,
    RegoError,
)

__all__ = ["LIBREGO", "LIBSTDCXX", "Bundle", "Input", "Interpreter", "LogLevel", "RegoError"]
