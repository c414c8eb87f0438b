"""One upstream exchange under the resilience rules: breakers, bulkheads, retries, windows.

Owns the circuit breaker and the sliding windows it counts in, the bulkheads, the retry
budget, and the exchange that applies them (`exchange`). Imports config, the upstream client
(`gateway.http.client`) and observe; never the ASGI entry.
"""
