"""Warnings that can come in floods (an upstream failing mid-response on every request),
logged at most once per interval for each key; the next line says how many were left out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttled:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, left out since)

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        logged, left_out = self._last.get(key, (float("-inf"), 0))
        if now - logged < self._interval:
            self._last[key] = (logged, left_out + 1)
            return
        if left_out:
            message += f" ({left_out} more like it since the last line)"
        self._logger.warning(message, *args)
        self._last[key] = (now, 0)
