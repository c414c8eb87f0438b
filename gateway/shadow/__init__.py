"""Shadow traffic: copy a request to the candidate, compare the answers, report.

Owns the mirror on the request path (`mirror`), the copy budget, the worker process and its
comparer, the response differ (pure), the results store and the report. Imports config and
observe; never the ASGI entry.
"""
