"""A bulkhead: a count of requests in flight, admitted against a cap chosen by priority.

One bulkhead per upstream keeps a slow upstream from taking every slot of the gateway, and
one for the whole gateway bounds its own load. The caps come from the route table
(`Shedding.cap`): critical requests may fill the whole limit, normal ones stop short of the
critical reserve, background ones short of both reserves, so as load rises background is
shed first, then normal. A request over its cap is refused at once, never queued: a queue
only turns overload into latency for everyone.
"""

from __future__ import annotations

from gateway.config.resilience import PRIORITIES


class Bulkhead:
    __slots__ = ("in_flight", "shed")

    def __init__(self) -> None:
        self.in_flight = 0
        self.shed = dict.fromkeys(PRIORITIES, 0)  # refused requests by priority

    def enter(self, cap: int, priority: str) -> bool:
        if self.in_flight >= cap:
            self.shed[priority] += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
