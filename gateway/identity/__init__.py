"""Who a request is and what it may do: tokens, JWKS, revocations, policy engines, the guard.

Owns JWT verification (`tokens`), the revocation denylist (`revocations`), the decision
input document, the policy port (`decision`), its engines (`policy` chooses one:
`embedded_policy` on `rego`, `opa`) and their cache (`decision_cache`), and the guard that
puts them together per request. Imports config and the shared store (`gateway.limits.store`).
"""
