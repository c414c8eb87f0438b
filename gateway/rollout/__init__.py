"""Moving a feature: who gets which upstream, evidence, promotion, read-your-writes.

Owns the sticky assignment of users to upstreams (`assignment`, `sticky`), the evidence a
promotion is judged on and the promotion itself (`evidence`, `promotion`, `diff`, `editor`),
and read-your-writes across the split (`consistency`, `pins`, `watermark`). Imports config,
identity, limits and observe; never the ASGI entry.
"""
