"""HTTP in and out: the server layer, the request pipeline, the upstream client and its pools.

Owns the ASGI entry (`proxy`: the request pipeline, its stages in `stages`, `forward` and
`upgrade`, one `context.RequestContext` per request), the client's body (`body`), the edge
rules of the server (`server`), header rules (`headers`), the upstream client and pools
(`client`, `pools`), WebSocket tunnels, the access log and the shutdown. The top layer: it
may import every feature package; no feature package imports the ASGI entry (the features
that are stages import `context` and `body`, which import no feature stage).
"""
