"""A scrape of one worker holds every worker's series, each with its `worker` label
(gateway/observe/siblings.py): real Unix sockets between Siblings of one event loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.siblings import Siblings, WorkerSlot, decode, encode

pytestmark = pytest.mark.anyio


def registry_counting(n: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("things", "Things done.", ["route"], registry=registry)
    counter.labels("a").inc(n)
    counter.labels("b").inc(1)
    return registry


def samples(exposition: bytes) -> dict[tuple[str, str], float]:
    """(route, worker) -> things_total, from the text format."""
    found = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for s in family.samples:
            if s.name == "things_total":
                found[s.labels["route"], s.labels["worker"]] = s.value
    return found


def test_families_travel_as_json_unchanged() -> None:
    registry = registry_counting(3)
    families = list(registry.collect())
    assert [(f.name, f.type, f.samples) for f in decode(encode(families))] == [
        (f.name, f.type, [s._replace(timestamp=None, exemplar=None) for s in f.samples])
        for f in families
    ]


async def test_a_scrape_of_one_worker_holds_every_workers_series(tmp_path: Path) -> None:
    workers = [
        Siblings(WorkerSlot(i, 3, tmp_path), registry_counting(n)) for i, n in enumerate((5, 7, 11))
    ]
    for worker in workers:
        await worker.start()
    try:
        for answering in workers:
            found = samples(generate_latest(await answering.registry_of_all()))
            assert found == {
                ("a", "0"): 5,
                ("b", "0"): 1,
                ("a", "1"): 7,
                ("b", "1"): 1,
                ("a", "2"): 11,
                ("b", "2"): 1,
            }
            assert sum(v for (route, _), v in found.items() if route == "a") == 23
    finally:
        for worker in workers:
            await worker.close()


async def test_a_sibling_that_does_not_answer_is_left_out(tmp_path: Path) -> None:
    alone = Siblings(WorkerSlot(0, 2, tmp_path), registry_counting(2))
    await alone.start()
    try:
        found = samples(generate_latest(await alone.registry_of_all()))
    finally:
        await alone.close()
    assert found == {("a", "0"): 2, ("b", "0"): 1}
