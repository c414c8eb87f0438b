"""The gateway: an ASGI reverse proxy that moves a monolith's features one route at a time.

Layers, top to bottom (checked by import-linter, see pyproject.toml):

    app          the composition root: builds every object and wires them together
    http         the server layer, the request pipeline, the upstream client
    rollout, shadow, resilience, limits, identity, observe    the features
    config       routes.yaml as frozen data, and its reload
    errors, types    the error hierarchy and the ASGI contract

Shared with the CDC bridge: `common` (the config reader, commit positions).
"""
