"""Rate limits, idempotency keys and revoked tokens, on the shared store (memory or Redis).

Owns the rate-limit algorithms and their adapters (`ratelimit`), idempotency keys
(`idempotency`), the Redis denylist of revoked tokens (`revocations`, the adapter of
identity's revocation port), the shared store connection (`store`) and the gate the request
pipeline passes (`gate`). Imports identity, config and base; never http.
"""
