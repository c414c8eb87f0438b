"""One long-lived connection pool per upstream (gateway.request.client), kept across reloads.

A pool is keyed by its upstream's whole config, so a reload that changes an upstream's URL
or limits gets a fresh pool, while unchanged upstreams keep their warm connections. A pool
that a new table no longer uses closes its idle connections at once and each busy one as
its request finishes.
"""

from __future__ import annotations

from gateway.config.lifecycle import Closing, Kept
from gateway.config.routes import Upstream
from gateway.config.table import RouteTable
from gateway.request.client import Pool


def _close(pool: Pool) -> Closing:
    pool.close()  # at once: busy connections close as their requests finish
    return None


class Pools:
    def __init__(self) -> None:
        self._pools: Kept[Upstream, Pool] = Kept(_close)

    def get(self, upstream: Upstream) -> Pool:
        pool = self._pools.live.get(upstream)  # every request: the dictionary, no more
        return pool if pool is not None else self._pools.get(upstream, Pool)

    def retain_only(self, table: RouteTable) -> None:
        """Close the pools of upstreams that `table` no longer has (called on reload)."""
        keep = set(table.upstreams.values())
        self._pools.retain(lambda upstream, _: upstream in keep)

    def close(self) -> None:
        """At shutdown (synchronous: a pool closes at once, nothing to wait for)."""
        for pool in self._pools.live.values():
            pool.close()
        self._pools.live.clear()
