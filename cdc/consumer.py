"""The Kafka loop: consume a batch, apply it in one transaction, then store its offsets.

Delivery is at least once and the sink is idempotent, so every change takes effect once:

- `enable.auto.offset.store=false`: an offset is stored only after the batch's database
  transaction committed (and its poison messages reached the dead-letter topic); the
  auto-committer then commits stored offsets, and revocation and shutdown commit them
  synchronously. A crash anywhere replays from the last committed offset.
- A database outage (`SinkUnavailable`) retries the same batch with exponential backoff;
  nothing is stored meanwhile. SIGTERM stops the loop after the batch in hand.
- A poison message (`EventError`) goes to the dead-letter topic with Kafka Connect's
  `__connect.errors.*` headers (origin topic, partition, offset, the error), and the bridge
  moves on. Every failure that belongs to one event is one (issue 17): `handle` raises
  only for the infrastructure (the dead-letter topic unreachable, a fatal Kafka error).
- An operator can skip or replay one event by topic, partition and offset
  (cdc/actions.py); the status says whether the bridge runs, waits for the database,
  stopped or crashed, and how many times it restarted after a crash (cdc/metrics.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cdc import envelope
from cdc.actions import Action, Inbox, actions_file
from cdc.envelope import Change, Heartbeat, Tombstone, TransactionBoundary
from cdc.errors import CdcError, EventError, Origin, SinkUnavailable
from cdc.mapping import Mapping
from cdc.metrics import Metrics
from cdc.outcome import Outcome
from cdc.sink import SqlSink

log = logging.getLogger("strangler.cdc")

BACKOFF_INITIAL_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 2.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class Options:
    bootstrap_servers: str
    group_id: str = "strangler-cdc"
    max_batch: int = 5000
    max_wait: float = 0.02  # seconds a batch waits to fill: the latency floor
    status_file: Path | None = None
    extra: tuple[tuple[str, str], ...] = ()  # more librdkafka settings
    # A member that dies without leaving (SIGKILL, a lost host) keeps its partitions until
    # the coordinator has heard nothing from it for this long, and a rebalance waits for
    # it: a restarted bridge applies nothing meanwhile (librdkafka #568). librdkafka's
    # default is 45 s; the brokers' minimum (group.min.session.timeout.ms) is 6 s, the
    # shortest wait a real broker allows (issue 17: restart in seconds). Heartbeats come
    # from librdkafka's own thread, so a long batch does not count here
    # (max.poll.interval.ms, 5 min, does).
    session_timeout_ms: int = 6_000
    # Static membership (KIP-345, `group.instance.id`): a bridge restarted under the same
    # id takes its partitions back at once, without a rebalance, on a real broker. Give
    # each replica a stable id (its pod or service name). librdkafka's mock cluster does
    # not implement it; there the session timeout alone bounds a restart.
    instance_id: str | None = None
    # Take every partition of the mapped topics without joining the group's rebalancing
    # (offsets are still committed to the group): for a single bridge, a restart resumes at
    # once instead of waiting for the dead member's session to time out.
    assign_all: bool = False


class Bridge:
    """One consumer of the mapped topics, applying to one sink."""

    def __init__(self, mapping: Mapping, sink: SqlSink, options: Options) -> None:
        self.mapping = mapping
        self.sink = sink
        self.options = options
        self.metrics = Metrics()
        self._stop = threading.Event()
        self._parser = envelope.Parser(mapping.topic_prefix)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        status = options.status_file
        self._inbox = Inbox(actions_file(status) if status is not None else None)
        self._skips: dict[Origin, Action] = {}  # messages an operator said never to apply
        self._replays: list[Action] = []  # not carried out yet: the partition is not ours

    def stop(self) -> None:
        """Finish the batch in hand, commit, and leave (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def topics(self) -> list[str]:
        prefix = self.mapping.topic_prefix.replace(".", r"\.")
        # Regex subscriptions tolerate topics that do not exist (yet): heartbeats, the
        # transaction topic and logical decoding messages are optional in Debezium.
        optional = rf"^(__debezium-heartbeat\.{prefix}|{prefix}\.transaction|{prefix}\.message)$"
        return [*self.mapping.topics, optional]

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        self.metrics.recover(self.options.status_file)
        try:
            self._run(on_ready)
        except BaseException as exc:
            self.metrics.crashed(exc)
            log.error("the bridge crashed: %s", self.metrics.last_error)
            raise
        finally:
            if self.metrics.state != "crashed":
                self.metrics.stopped()
            if self._consumer is not None:
                self._commit()
                self._consumer.close()
            if self._producer is not None:
                self._producer.flush(10)
            self.metrics.publish(self.options.status_file, force=True)

    def _run(self, on_ready: Callable[[], None] | None) -> None:
        common = {"bootstrap.servers": self.options.bootstrap_servers, **dict(self.options.extra)}
        membership: dict[str, str | int] = {
            "session.timeout.ms": self.options.session_timeout_ms,
            "heartbeat.interval.ms": max(100, min(3000, self.options.session_timeout_ms // 3)),
        }
        if self.options.instance_id:
            membership["group.instance.id"] = self.options.instance_id
        self._consumer = Consumer(
            {
                **membership,
                **common,
                "group.id": self.options.group_id,
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 5000,
                # librdkafka's default lets a fetch wait 500 ms for data; librdkafka's mock
                # cluster holds it that long even when data arrives, which alone put lag p99
                # near 500 ms (`bench cdc`). 50 ms costs at most 20 empty fetches a second.
                "fetch.wait.max.ms": 50,
                # A fetch that finds the local queue over its thresholds (queued.min.messages,
                # queued.max.messages.kbytes) is postponed by this long; librdkafka's default,
                # 1000 ms, left the bridge idle for a second after every ~40k events of a
                # backlog (`bench cdc`: 30k events/s parsed, 64k with 50 ms). The postponing
                # is local: a shorter wait sends no more requests to the broker.
                "fetch.queue.backoff.ms": 50,
            }
        )
        self._producer = Producer({**common, "linger.ms": 5})
        # A database that is not up yet is waited for, as an outage is.
        if self._while_unavailable(self._open) is None:
            return
        self._operator()  # before the first message: a skip must end a crash loop
        if self.options.assign_all:
            self._consumer.assign(self._all_partitions())
        else:
            self._consumer.subscribe(self.topics(), on_revoke=self._on_revoke)
        if on_ready is not None:
            on_ready()
        while not self.stopping:
            messages = self._consumer.consume(self.options.max_batch, self.options.max_wait)
            if messages:
                self.handle(messages)
            if self.metrics.publish(self.options.status_file):
                self._operator()

    def _operator(self) -> None:
        """Take up new skip and replay requests, and retry replays still waiting."""
        if self._inbox.poll():
            for line in self._inbox.unreadable:
                log.warning("operator: ignored an unreadable request %s", line)
            done = {entry.get("id") for entry in self.metrics.operator}
            for action in self._inbox.actions:
                origin = Origin(action.topic, action.partition, action.offset)
                if action.kind == "skip" and origin not in self._skips:
                    self._skips[origin] = action
                    if action.id not in done:
                        self._record(action, "will be skipped when met")
                elif (
                    action.kind == "replay"
                    and action.id not in done
                    and all(r.id != action.id for r in self._replays)
                ):
                    self._replays.append(action)
        self._replays = [r for r in self._replays if not self._replay(r)]

    def _replay(self, action: Action) -> bool:
        """Seek back to the action's offset if this bridge holds the partition."""
        assert self._consumer is not None
        held = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        if (action.topic, action.partition) not in held:
            return False
        try:
            self._consumer.seek(TopicPartition(action.topic, action.partition, action.offset))
        except KafkaException as exc:
            log.info("operator: %s waits: %s", action.describe(), exc)
            return False  # not fetching yet (just assigned): the next poll retries
        self._record(action, f"consuming again from offset {action.offset}")
        return True

    def _record(self, action: Action, result: str) -> None:
        log.warning("operator: %s: %s", action.describe(), result)
        entry = {
            "id": action.id,
            "request": action.describe(),
            "requested_at": action.requested_at,
            "result": result,
            "at": time.time(),
        }
        others = [e for e in self.metrics.operator if e.get("id") != action.id]
        self.metrics.operator = [*others, entry]

    def _all_partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        partitions = []
        for topic in self.mapping.topics:
            metadata = self._consumer.list_topics(topic, timeout=30).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise CdcError(f"topic {topic} is not available")
            # No offset given: each partition resumes at the group's committed offset.
            partitions += [TopicPartition(topic, p) for p in metadata.partitions]
        optional = re.compile(self.topics()[-1])
        for topic, metadata in self._consumer.list_topics(timeout=30).topics.items():
            if optional.match(topic) and metadata.error is None:
                partitions += [TopicPartition(topic, p) for p in metadata.partitions]
        return partitions

    def _on_revoke(self, consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        # Batches are applied synchronously inside the loop, so whatever is stored is final.
        self._commit()

    def _commit(self) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed (the batch will be replayed): %s", exc)

    def handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        changes: list[Change] = []
        dead: list[tuple[Message, EventError]] = []
        by_origin: dict[Origin, Message] = {}
        last: dict[tuple[str, int], int] = {}  # the offset to store, per partition
        parse = self._parser.parse
        metrics = self.metrics
        skips = self._skips
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise CdcError(f"Kafka consumer failed: {error}")
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    log.debug("Kafka: %s", error)  # optional heartbeat/transaction topics
                else:
                    log.warning("Kafka: %s", error)  # transient: the client retries
                continue
            topic = message.topic() or ""
            partition = message.partition() or 0
            offset = message.offset() or 0
            last[(topic, partition)] = offset
            origin = Origin(topic, partition, offset)
            if skips and origin in skips:
                metrics.topic(topic).skipped += 1
                self._record(skips[origin], "skipped")
                continue
            try:
                event = parse(origin, message.key(), message.value())
            except EventError as exc:
                dead.append((message, exc))
                continue
            if isinstance(event, Change):
                changes.append(event)
                by_origin[origin] = message
            elif isinstance(event, Tombstone):
                metrics.topic(topic).tombstones += 1
            elif isinstance(event, Heartbeat):
                metrics.topic(topic).heartbeats += 1
            elif isinstance(event, TransactionBoundary):
                metrics.topic(topic).transactions += 1
        outcome = self._apply(changes) if changes else None
        if outcome is None and changes:
            return  # stopping during an outage: nothing stored, the batch is replayed later
        if outcome is not None:
            dead.extend((by_origin[e.origin], e) for e in outcome.rejected)
        if dead:
            self._dead_letter(dead)
        self._store(last)
        self._count(outcome, dead)
        metrics.batch_done(time.perf_counter() - started)

    def _apply(self, changes: list[Change]) -> Outcome | None:
        return self._while_unavailable(lambda: self.sink.apply(changes))

    def _open(self) -> bool:
        self.sink.open()
        return True

    def _while_unavailable(self, work: Callable[[], _T]) -> _T | None:
        """`work`, retried with backoff while the database is unavailable (None: stopped
        meanwhile)."""
        delay = BACKOFF_INITIAL_SECONDS
        while True:
            try:
                result = work()
                self.metrics.state = "running"
                return result
            except SinkUnavailable as exc:
                self.metrics.state = "waiting-for-database"
                self.metrics.publish(self.options.status_file)
                log.warning("%s; retrying in %.2fs", exc, delay)
                # Waiting on the stop event, not sleeping: SIGTERM ends the wait at once.
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _dead_letter(self, dead: list[tuple[Message, EventError]]) -> None:
        assert self._producer is not None
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for message, error in dead:
            log.warning("dead-lettered %s", error)
            self._producer.produce(
                self.mapping.dead_letter_topic,
                key=message.key(),
                value=message.value(),
                headers=[
                    ("__connect.errors.topic", error.origin.topic.encode()),
                    ("__connect.errors.partition", str(error.origin.partition).encode()),
                    ("__connect.errors.offset", str(error.origin.offset).encode()),
                    ("__connect.errors.exception.class.name", type(error).__name__.encode()),
                    ("__connect.errors.exception.message", error.reason.encode()),
                ],
                on_delivery=delivered,
            )
        remaining = self._producer.flush(30)
        if remaining or failures:
            # Storing offsets now would lose the messages: fail, and replay them on restart.
            raise CdcError(f"dead-letter topic unavailable: {failures or 'flush timed out'}")

    def _store(self, last: dict[tuple[str, int], int]) -> None:
        assert self._consumer is not None
        if last:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )
        for (topic, partition), offset in last.items():
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            lag = max(0, high - offset - 1) if high >= 0 else 0
            self.metrics.topic(topic).partitions[partition] = lag

    def _count(self, outcome: Outcome | None, dead: list[Any]) -> None:
        metrics = self.metrics
        for _, error in dead:
            metrics.dead_letter(error.origin.topic)
        if outcome is None:
            return
        for topic, progress in outcome.progress.items():
            stats = metrics.topic(topic)
            if progress.source_ts_ms is not None:
                stats.last_source_ts_ms = max(stats.last_source_ts_ms or 0, progress.source_ts_ms)
            if progress.position is not None and (
                stats.position is None or progress.position > stats.position
            ):
                stats.position = progress.position
        for topic, counts in outcome.topics.items():
            stats = metrics.topic(topic)
            stats.applied += counts.applied
            stats.skipped += counts.skipped
            stats.ignored += counts.ignored
            stats.truncates += counts.truncates
