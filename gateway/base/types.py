"""The ASGI contract, written once (ASGI 3: https://asgi.readthedocs.io/en/latest/specs/)."""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A key of the gateway's own in an `http.response.start` message: the body follows at once
# (no wait between the two messages), so the server may write head and body in one write
# (gateway/http/cycle.py). A server that does not know it ignores it, as ASGI says.
BODY_FOLLOWS = "strangler.body_follows"
