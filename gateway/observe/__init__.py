"""The gateway watching itself: traffic counts, `/metrics`, the admin API, the dashboard.

Owns the request counters (`traffic`), the Prometheus exposition (`metrics`,
`feature_metrics`), the admin endpoints (`admin`), the dashboard and its static files, the
monitor that serves them, the CDC lag as the gateway reads it (`cdc`) and throttled
logging. Reads the features' plain stats at scrape time, so it sits above them; never
imports http.
"""
