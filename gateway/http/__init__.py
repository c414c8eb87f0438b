"""HTTP in: the server layer and the request pipeline.

Owns the ASGI entry (`proxy`: one `RequestContext`, `context`, carried forward through the
stages), the stages themselves (`stages`: normalise, match, the gateway's own endpoints,
authenticate, authorize, record; `forward`: the upstream exchange, the relay and the shadow
copy; `upgrade`: WebSocket upgrades), the request body (`body`), the edge rules of the
server (`server`), header rules (`headers`), WebSocket tunnels, the access log and the
shutdown. The top layer under the composition root: it may import every feature package;
nothing below it imports it.
"""
