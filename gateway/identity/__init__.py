"""Who a request is and what it may do: tokens, JWKS, revocations, policy engines, the guard.

Owns JWT verification (`tokens`), the revocation denylist (`revocations`), the decision
input document, the policy port and its engines (`policy`, `rego`) and the guard that puts
them together per request. Imports config and the shared store (`gateway.limits.store`).
"""
