"""Revoked tokens in Redis: the shared store's adapter of identity's revocation port.

The denylist holds a token's `jti` until the token would have expired anyway (its `exp`
plus the routes file's leeway), so it never grows past the tokens still in circulation.
In Redis the entry expires by itself (`SET ... PXAT`), and every replica sees it at once.
"""

from __future__ import annotations

import hashlib
import time

from gateway.limits.store import RedisStore


class RedisRevocations:
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def _name(self, jti: str) -> str:
        return self.store.key("revoked", hashlib.blake2b(jti.encode(), digest_size=16).hexdigest())

    async def is_revoked(self, jti: str) -> bool:
        name = self._name(jti)
        found: int = await self.store.run("revocation", lambda client: client.exists(name))
        return bool(found)

    async def revoke(self, jti: str, until: float) -> None:
        if until <= time.time():
            return  # already expired: no verifier accepts it
        name = self._name(jti)
        at = round(until * 1000)
        await self.store.run("revocation", lambda client: client.set(name, b"1", pxat=at))
