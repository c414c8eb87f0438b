"""HTTP in and out: the server layer, the request pipeline, the upstream client and its pools.

Owns the ASGI entry (`proxy`), the edge rules of the server (`server`), header rules
(`headers`), the upstream client and pools (`client`, `pools`), WebSocket tunnels, the
access log and the shutdown. The top layer: it may import every feature package; no feature
package imports the ASGI entry.
"""
