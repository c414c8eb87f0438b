"""A route's `websocket:` key: whether it proxies WebSocket upgrades, and their limits.

routes:
  - name: live
    path: /live
    upstream: legacy
    websocket: true               # off by default; or, with limits other than the defaults:
    # websocket: {idle_timeout: 5m, max_message: 1MiB}

- idle_timeout: a tunnel with no byte either way for this long is closed (close code 1001
  to the client). nginx closes an idle WebSocket after proxy_read_timeout, 60 s; Envoy
  after its idle_timeout, 1 h. Ours: 5 minutes.
- max_message: the largest message (the payloads of its frames) either side may send; past
  it the tunnel is closed with 1009 (Message Too Big). The `websockets` library's default
  limit is 1 MiB; so is ours. The gateway does not pass `Sec-WebSocket-Extensions` on, so
  no compression is negotiated through it and the limit is the size the other end gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from yaml.nodes import MappingNode, Node

from common.validation import NodeReader, parse_size, positive_duration


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    idle_timeout: float = 300.0
    max_message: int = 1 << 20


def read_websocket(reader: NodeReader, node: Node, what: str) -> WebSocketSettings | None:
    """None: the route does not proxy WebSocket upgrades."""
    where = f"{what}: websocket"
    if not isinstance(node, MappingNode):
        flag = reader.scalar(node, where)
        if flag not in ("true", "false", None):
            reader.error(node, f"{where} must be true, false or a mapping of its limits")
        return WebSocketSettings() if flag == "true" else None
    fields = reader.mapping(node, where, {"idle_timeout", "max_message"})
    defaults = WebSocketSettings()
    if fields is None:
        return defaults
    return WebSocketSettings(
        idle_timeout=reader.optional(
            fields, "idle_timeout", where, positive_duration, defaults.idle_timeout
        ),
        max_message=reader.optional(fields, "max_message", where, parse_size, defaults.max_message),
    )
