from __future__ import annotations

# First, before any C++ extension module is loaded: it decides which C++ allocator regopy
# and everything else in the process share (gateway/rego.py explains; issue #16).
import gateway.rego  # noqa: F401
