"""Kept: the objects of a route table, kept across reloads while the table names them."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config.lifecycle import Closing, Kept

pytestmark = pytest.mark.anyio


class Resource:
    def __init__(self, key: str) -> None:
        self.key = key
        self.closed = False
        self.release = asyncio.Event()

    async def aclose(self) -> None:
        await self.release.wait()  # a close that takes a while (connections to drain)
        self.closed = True


def closing(resource: Resource) -> Closing:
    return resource.aclose()


async def test_kept_builds_once_keeps_the_named_and_closes_the_rest_later() -> None:
    built: list[str] = []

    def build(key: str) -> Resource:
        built.append(key)
        return Resource(key)

    kept: Kept[str, Resource] = Kept(closing)
    a, b = kept.get("a", build), kept.get("b", build)
    assert kept.get("a", build) is a and built == ["a", "b"]
    kept.retain(lambda key, _: key == "a")  # a reload that no longer names b
    assert list(kept.live) == ["a"] and not b.closed  # closing in the background
    b.release.set()
    a.release.set()
    await kept.close()  # the live ones, and waits for b's close too
    assert a.closed and b.closed and not kept.live


async def test_objects_with_nothing_to_close_are_forgotten() -> None:
    kept: Kept[int, str] = Kept()
    kept.get(1, str)
    kept.retain(lambda key, value: value == "2")
    assert kept.live == {}
    assert kept.get(1, lambda key: "again") == "again"  # built afresh when named again
    await kept.close()
