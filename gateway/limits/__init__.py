"""Rate limits and idempotency keys, on the shared store (memory or Redis).

Owns the rate-limit algorithms and their adapters (`ratelimit`), idempotency keys
(`idempotency`), the shared store connection (`store`) and the gate the request path passes
(`gate`). Imports config and identity; never the ASGI entry.
"""
