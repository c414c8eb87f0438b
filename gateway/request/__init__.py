"""One request on its way upstream: what the pipeline carries and what sends it.

Owns the per-request context the stages fill in (`context`), the request body and the copy
kept for the shadow (`body`), the header rules of the hop (`headers`), and the upstream
HTTP/1.1 client: its connections (`connection`, parsed by httptools), pools (`client`) and the
pools kept across reloads (`pools`). Below every feature that takes a request or asks an
upstream (rollout, limits, resilience, shadow); imports identity (who the request is),
config and base.
"""
