"""The migration map: `routes.yaml` read into frozen, validated data, and its hot reload.

Owns the route table (`table`), one module per section of the file (`access`, `edge`,
`limits`, `metrics`, `resilience`, `rollout`, `shadow`, `websocket`, `consistency`), the
value types those sections are made of (`split`, `paths`), the environment settings and the
watcher that swaps a new table in (`reload`). The bottom layer of the gateway: it imports
`common`, `gateway.errors` and `gateway.types`, never a feature package.
"""
