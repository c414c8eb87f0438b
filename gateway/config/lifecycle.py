"""What a route table's objects go through across reloads: kept while the table names them.

Pools (per upstream), resilience state (per upstream), guards (per auth section), the
read-your-writes watermarks (per position source) and the limits' store (per endpoint) are
each built on first use, one per key the table holds; a reload keeps those whose key the new
table still holds and closes the rest, without waiting: requests of the old table may still
be using them. `close` (at shutdown) closes the live ones and waits for those closes too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Closing = Coroutine[Any, Any, None] | None  # what closing one object returns: wait for it, or not


def forget(_: object) -> Closing:
    """For objects that hold nothing to close: dropping them is enough."""
    return None


class Kept(Generic[K, V]):
    def __init__(self, close: Callable[[V], Closing] = forget) -> None:
        self.live: dict[K, V] = {}
        self._close = close
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, key: K, build: Callable[[K], V]) -> V:
        """The object of `key`, built by `build(key)` the first time."""
        found = self.live.get(key)
        if found is None:
            found = self.live[key] = build(key)
        return found

    def retain(self, keep: Callable[[K, V], bool]) -> None:
        """On reload: close the objects that `keep` turns down, in the background."""
        for key, value in list(self.live.items()):
            if not keep(key, value):
                del self.live[key]
                closing = self._close(value)
                if closing is not None:
                    task = asyncio.get_running_loop().create_task(closing)
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every object, and wait for the closes a reload started."""
        values = list(self.live.values())
        self.live.clear()
        closing = [c for c in map(self._close, values) if c is not None]
        await asyncio.gather(*closing, *self._closing)
