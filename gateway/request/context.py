"""One request on its way through the pipeline (gateway.http.proxy): what each stage found.

The stages run in a fixed order and each fills in its part: the path (normalise), the route
and its upstream (match), the identity (authenticate), the split's pick and a tester's
override (the assigner), the access decision (authorize), the upstream that answers (the
assigner, read-your-writes), the request as sent upstream (forward), and the outcome
(status, bytes) that the log stage writes. One object per request, in place of the locals
and long parameter lists the stages would otherwise pass each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.base.types import Scope
from gateway.config.routes import Route, Upstream
from gateway.config.table import RouteTable
from gateway.identity.guard import Access
from gateway.identity.tokens import Identity
from gateway.request.headers import Headers


@dataclass(slots=True)
class RequestContext:
    scope: Scope
    table: RouteTable  # one snapshot for the whole request
    request_id: str
    started: float  # perf_counter at arrival
    path: str | None = None  # normalised; None until then (the log shows the raw one)
    route: Route | None = None  # None: the default upstream, or a gateway endpoint
    upstream: Upstream | None = None  # None: answered by the gateway itself
    identity: Identity | None = None
    access: Access | None = None
    override: str | None = None  # the upstream a tester asked for (X-Strangler-Target)
    cookie: bytes | None = None  # the sticky split's Set-Cookie value
    measured: bool = False  # the answer is evidence of the split (gateway.rollout.evidence)
    target: bytes = b""  # the request target as sent upstream, query included
    headers: Headers = field(default_factory=list)  # the headers as sent upstream
    status: int = 0
    sent: int = 0  # body bytes sent to the client

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def body_limit(self) -> int:
        """The largest request body accepted: the route's `max_body`, else the table's."""
        route = self.route
        return route.max_body if route and route.max_body is not None else self.table.max_body

    def public_origin(self) -> str:
        """The gateway's own origin as the client addressed it (for rewritten redirects)."""
        return f"{self.scope.get('scheme', 'http')}://{_host(self.scope)}"


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else "localhost"
