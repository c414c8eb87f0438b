"""The gateway watching itself: traffic counts, `/metrics`, the admin API, the dashboard.

Owns the request counters (`traffic`, `histogram`), the Prometheus exposition (`metrics`,
`feature_metrics`), the admin endpoints (`admin`), the dashboard and its static files, the
CDC lag as the gateway reads it (`cdc`) and throttled logging. Imports config and the
features whose stats it reads; never the ASGI entry.
"""
