"""The migration map: `routes.yaml` read into frozen, validated data, and its hot reload.

Owns the route table (`table`), one module per section of the file (`routes`, `access`,
`cdc`, `edge`, `limits`, `metrics`, `resilience`, `rollout`, `shadow`, `websocket`,
`consistency`), the value types those sections are made of (`split`, `paths`, and the
compare-rules language, `compare`), the environment settings and the watcher that swaps a
new table in (`reload`). A section's types live here with their reader, and the feature
that acts on them imports them (the token verifier its keys, the sticky split its cookie).
The bottom layer of the gateway: it imports `common`, `gateway.base.errors` and
`gateway.base.types`, never a feature package.
"""
