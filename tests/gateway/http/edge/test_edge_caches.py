"""Caches a client can fill are bounded in bytes: long keys are computed, never kept."""

from __future__ import annotations

from gateway.config import paths


def test_long_paths_are_normalised_but_not_cached() -> None:
    paths._cached.cache_clear()
    short = b"/short/%7Euser"
    long = b"/" + b"a" * paths.CACHED_PATH_BYTES
    assert paths.normalise(short) == "/short/~user"
    assert paths.normalise(long) == long.decode()
    assert paths.normalise(long) == long.decode()
    info = paths._cached.cache_info()
    assert (info.currsize, info.misses) == (1, 1)  # only the short one was kept
