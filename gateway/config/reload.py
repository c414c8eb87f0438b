"""Hot reload of `routes.yaml`: validate the new file, then swap the whole table at once.

The current table is one attribute; a request reads it once and uses that snapshot to the
end, so no request ever sees half of one version and half of another. An invalid file is
logged with every error and leaves the last good table serving.

Watching (GatewayApp's loop) is a cheap poll of the file's stat (mtime, size, inode): it
needs no extra dependency, works on every filesystem (bind mounts and ConfigMap symlink
swaps included, where inotify often misses changes), and reads the file only when it moved.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.validation import ConfigError
from gateway.config import table as config
from gateway.config.table import RouteTable

log = logging.getLogger("strangler.reload")


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    at: float
    errors: list[str]


class RoutesWatcher:
    def __init__(
        self,
        path: str | Path,
        on_swap: Callable[[RouteTable], None] | None = None,
        check: Callable[[RouteTable], None] | None = None,
    ) -> None:
        self.path = Path(path)
        # what the process asks of a table beyond the file's own rules (a ConfigError)
        self.check = check or (lambda table: None)
        self.table: RouteTable = self._load()  # startup fails loudly on a bad file
        self.last_failure: ReloadFailure | None = None
        self.history: list[tuple[float, str]] = [(self.table.loaded_at, self.table.version)]
        self.on_swap = on_swap
        self._stat = self._file_stat()

    def _load(self) -> RouteTable:
        table = config.load(self.path)
        self.check(table)
        return table

    def _file_stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> bool:
        """Re-read the file; swap when it is valid and different. True when swapped."""
        self._stat = self._file_stat()
        try:
            table = self._load()
        except ConfigError as exc:
            self.last_failure = ReloadFailure(time.time(), [str(i) for i in exc.issues])
            log.error("routes reload rejected, keeping version %s\n%s", self.table.version, exc)
            return False
        self.last_failure = None
        if table.version == self.table.version:
            return False
        previous, self.table = self.table, table
        self.history = [*self.history[-19:], (table.loaded_at, table.version)]
        log.info("routes reloaded: version %s -> %s", previous.version, table.version)
        if self.on_swap is not None:
            self.on_swap(table)
        return True

    def describe(self) -> dict[str, Any]:
        """The serving table, the reload history and the last rejected edit's errors."""
        failure = self.last_failure
        return {
            **self.table.describe(),
            "history": [{"at": at, "version": v} for at, v in self.history],
            "last_rejected": {"at": failure.at, "errors": failure.errors} if failure else None,
        }

    def changed(self) -> bool:
        return self._file_stat() != self._stat
