"""`/metrics` with several workers: the answering worker gathers its siblings' series.

A scrape reaches one worker, the one the kernel gave the connection. Each worker counts only
what it served, so its own series alone would make Prometheus see counters jump between
workers' values from one scrape to the next. Instead every worker listens on a Unix socket
of its own in a directory the supervisor made (gateway/http/workers.py), and answers there
with its metric families as JSON; the worker that is scraped asks every sibling, adds a
`worker` label ("0" .. "N-1") to each series, its own included, and renders them together.
A scrape thus holds every worker's series, and the gateway's totals are a sum over the
label: `sum without (worker) (rate(strangler_requests_total[5m]))`. Gauges stay per worker
(`process_resident_memory_bytes{worker="1"}`), where a sum would mean nothing for some
(`strangler_store_up`, `process_start_time_seconds`).

A sibling that does not answer within SIBLING_TIMEOUT (being restarted, say) is left out of
that scrape; its counters restart from zero with it, which Prometheus' rate() reads as a
counter reset, as it does for a restarted replica. With one worker nothing here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("strangler.metrics")

SIBLING_TIMEOUT = 1.0  # seconds a scrape waits for each sibling
LABEL = "worker"


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Which worker this process is, of how many, and where the workers' sockets live."""

    index: int
    count: int
    directory: Path

    def socket(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"


def encode(families: Iterable[Metric]) -> bytes:
    return json.dumps(
        [
            [
                f.name,
                f.documentation,
                f.type,
                f.unit,
                [[s.name, s.labels, s.value] for s in f.samples],
            ]
            for f in families
        ]
    ).encode()


def decode(data: bytes) -> list[Metric]:
    families = []
    for name, documentation, typ, unit, samples in json.loads(data):
        family = Metric(name, documentation, typ, unit)
        for sample_name, labels, value in samples:
            family.add_sample(sample_name, labels, value)
        families.append(family)
    return families


def labelled(families: Iterable[Metric], worker: int) -> Iterator[Metric]:
    """The families with `worker="N"` on every sample."""
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for s in family.samples:
            copy.add_sample(s.name, {**s.labels, LABEL: str(worker)}, s.value)
        yield copy


def merged(per_worker: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per name, holding every worker's samples (the text format wants a
    family's samples together, under one HELP and TYPE)."""
    by_name: dict[str, Metric] = {}
    for families in per_worker:
        for family in families:
            held = by_name.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            held.samples.extend(family.samples)
    return list(by_name.values())


class _Families(Collector):
    """A collector of families gathered already, for prometheus_client's encoders."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class Siblings:
    """This worker's socket for its siblings, and the gathering of theirs at a scrape."""

    def __init__(self, slot: WorkerSlot, registry: CollectorRegistry) -> None:
        self.slot = slot
        self.registry = registry
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        path = self.slot.socket(self.slot.index)
        path.unlink(missing_ok=True)  # left by this slot's previous worker, if it died
        self._server = await asyncio.start_unix_server(self._answer, path=str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(encode(self.registry.collect()))
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _ask(self, index: int) -> list[Metric]:
        try:
            async with asyncio.timeout(SIBLING_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(self.slot.socket(index)))
                try:
                    data = await reader.read()
                finally:
                    writer.close()
            return decode(data)
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning(
                "metrics: worker %d did not answer, left out of this scrape: %r", index, exc
            )
            return []

    async def registry_of_all(self) -> CollectorRegistry:
        """Every worker's families, labelled, in one registry to render."""
        others = [i for i in range(self.slot.count) if i != self.slot.index]
        gathered = await asyncio.gather(*(self._ask(i) for i in others))
        per_worker = [labelled(self.registry.collect(), self.slot.index)]
        per_worker += [labelled(families, i) for i, families in zip(others, gathered, strict=True)]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merged(per_worker)))
        return registry
