"""One upstream exchange under the resilience rules: breakers, bulkheads, retries, windows.

Owns the circuit breaker and the sliding windows it counts in, the bulkheads, the retry
budget, and the exchange that applies them (`exchange`) around the upstream client
(`gateway.request`). Imports request, config and base; never http.
"""
