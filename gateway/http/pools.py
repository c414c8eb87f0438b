"""One long-lived connection pool per upstream (gateway.http.client), kept across reloads.

A pool is keyed by its upstream's whole config, so a reload that changes an upstream's URL
or limits gets a fresh pool, while unchanged upstreams keep their warm connections. A pool
that a new table no longer uses closes its idle connections at once and each busy one as
its request finishes.
"""

from __future__ import annotations

from gateway.config.routes import Upstream
from gateway.config.table import RouteTable
from gateway.http.client import Pool


class Pools:
    def __init__(self) -> None:
        self._pools: dict[Upstream, Pool] = {}

    def get(self, upstream: Upstream) -> Pool:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = Pool(upstream)
        return pool

    def retain_only(self, table: RouteTable) -> None:
        """Close the pools of upstreams that `table` no longer has (called on reload)."""
        keep = set(table.upstreams.values())
        for upstream in [u for u in self._pools if u not in keep]:
            self._pools.pop(upstream).close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
