"""`strangler demo`: a migration of /search walked through step by step, and its helpers.

Drives the gateway, the monolith, the search service and the CDC bridge from outside, as a
user would: it may import any package of the project; none imports it (but the CLI).
"""
