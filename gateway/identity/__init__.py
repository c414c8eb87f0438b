"""Who a request is and what it may do: tokens, JWKS, policy engines, the guard.

Owns JWT verification (`tokens`, with the revocation port the shared store implements in
`gateway.limits.revocations`), the decision input document, the policy port (`decision`),
its engines (`policy` chooses one: `embedded_policy` on `rego`, `opa`) and their cache
(`decision_cache`), and the guard that authenticates and authorizes a request. Imports
config and base.
"""
