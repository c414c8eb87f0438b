"""Shadow traffic: copy a request to the candidate, compare the answers, report.

Owns the mirror on the request path (`mirror`), the copy budget, the worker (`worker`, the
gateway's side; `worker_process`; the `frames` between them) and its comparer, the response
differ (pure), the results store (`store`, the port; `records`, `redaction`, `schema`,
`sql_store`, `summaries`) and the report. Imports config and observe; never the ASGI entry.
"""
