"""The gateway: an ASGI reverse proxy that moves a monolith's features one route at a time.

Layers, top to bottom (import-linter checks them: pyproject.toml, docs/layout.md):

    app          the composition root: builds every object and passes it in
    http         the server layer and the request pipeline (the ASGI entry)
    observe      metrics, the admin API, the dashboard: read the features below
    rollout      who gets which upstream, evidence, promotion, read-your-writes
    shadow | limits | resilience    copies and comparisons; the shared store; the exchange
    request      what the pipeline hands the features: the per-request context, the body,
                 the header rules; and the HTTP/1.1 client that asks upstreams
    identity     tokens, policies, the guard
    config       routes.yaml as frozen data, and its reload
    base         the ASGI contract, the error answers, the histogram

Shared with the CDC bridge and the monolith: `common` (the config reader, commit positions).
"""
