"""The lake sink: readings and labels from Kafka into the Parquet lake, each offset exactly once.

Positions come from the lake's own manifest, never from Kafka's committed offsets: when a
partition is assigned (at start or after a rebalance) the sink seeks it to the offset after the
lake's last commit for it. Events are validated with the event schemas; an invalid one goes to
the dead-letter topic and its offset still counts as handled in the next commit, so a restart
neither loses nor re-sends it. A micro-batch is written when ``lake.batch_rows`` events are
pending or the oldest has waited ``lake.flush_interval_s``. Order of a flush: dead letters
acknowledged by the broker, then Parquet files, then the commit file (the commit point), then
Kafka offsets (only for lag monitoring). A crash between the first and the third step re-sends
those dead letters after the restart (at-least-once for the DLQ); the lake itself stays exact.

One sink writes to one lake directory at a time (a lock file enforces it). It joins its consumer
group as a static member (``group.instance.id`` derived from the lake directory), so a sink that
restarts after a crash gets its partitions back at once instead of after the session timeout.
A static member whose session expired while a broker restarted can be fenced by its own rejoin
(:data:`mlops.kafka.SELF_FENCING`); the sink then drops what it has not committed and opens a new
consumer, which resumes every partition after the lake's last commit, once in 10 minutes
(:class:`~mlops.kafka.ReopenBudget`): fenced again, it stops with the error.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.data import lake
from mlops.data.dlq import DeadLetters
from mlops.data.schemas import lake_row, parse_label, parse_reading
from mlops.errors import FatalKafkaError, ValidationError
from mlops.log import get_logger

__all__ = ["CONSUMER_NAME", "LakeSink", "SinkStats", "instance_id"]

log = get_logger(__name__)

CONSUMER_NAME = "lake-sink"


@dataclass
class SinkStats:
    """What one run of the sink did; ``dead_letters`` per kind of reason."""

    consumed: int = 0
    rows_written: int = 0
    commits: int = 0
    skipped_duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    first_event_at: float | None = None
    last_event_at: float | None = None
    """Clock readings of the first and last event handled: the rate excludes start-up and idle time."""

    @property
    def events_per_s(self) -> float:
        if self.first_event_at is None or self.last_event_at is None or self.last_event_at <= self.first_event_at:
            return 0.0
        return self.consumed / (self.last_event_at - self.first_event_at)


@dataclass
class _Pending:
    """Consumed but not yet committed events of one topic partition."""

    first_offset: int
    last_offset: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: int = 0


def instance_id(settings: Settings) -> str:
    """Static group member id: one per lake directory, stable across restarts (see LakeSettings)."""
    if settings.lake.instance_id:
        return settings.lake.instance_id
    return f"lake-sink-{hashlib.sha256(str(settings.lake_dir).encode()).hexdigest()[:12]}"


class LakeSink:
    """Consumes the readings and labels topics into the lake. Use :meth:`run`; stop with :meth:`stop`."""

    def __init__(self, settings: Settings, *, batch_rows: int | None = None, flush_interval_s: float | None = None,
                 on_progress: Callable[[SinkStats], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        topics = settings.kafka.topics
        self._tables = {topics.readings: "readings", topics.labels: "labels"}
        self._parsers: dict[str, Callable[[bytes | None], Any]] = {topics.readings: parse_reading,
                                                                    topics.labels: parse_label}
        self._batch_rows = batch_rows or settings.lake.batch_rows
        self._flush_interval_s = flush_interval_s or settings.lake.flush_interval_s
        self._on_progress = on_progress
        self._clock = clock
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._pending_count = 0
        self._oldest_pending: float | None = None
        self._next: dict[tuple[str, int], int] = {}  # first offset not in the lake, per assigned partition
        self._stopping = False
        self._consumer: Consumer | None = None
        self._abandoned: list[Consumer] = []
        """Consumers replaced after a self-fencing; never closed (closing a fenced client can block)."""
        self._dead = DeadLetters(settings, CONSUMER_NAME)
        self._context = f"lake sink (group {settings.lake.group_id})"
        # One reopen per 10 minutes: a broker restart fences the sink once, while a second process
        # with the same instance id fences the reopened consumer again as soon as it joins.
        self._reopens = kafka.ReopenBudget(self._context, limit=1)
        self.stats = SinkStats()

    def stop(self) -> None:
        """Ask :meth:`run` to write what it holds and return (safe from a signal handler)."""
        self._stopping = True

    def run(self, max_events: int | None = None, idle_exit_s: float | None = None) -> SinkStats:
        """Consume until stopped, ``max_events`` events handled, or no event for ``idle_exit_s`` seconds."""
        kafka.ensure_topics(self._settings.kafka, [t for t in kafka.design_topics(self._settings.kafka)
                                                   if t.name in (*self._tables, self._settings.kafka.topics.dlq)])
        with lake.writer_lock(self._settings):
            for table in lake.TABLES:
                lake.remove_orphans(self._settings, table)
            consumer = self._open_consumer()
            self.stats = SinkStats()
            last_event = self._clock()
            clean = False
            try:
                while not self._stopping:
                    # Never take more than fits the batch (or the run), so commits hold batch_rows events.
                    budget = max(1, min(500, self._batch_rows - self._pending_count))
                    if max_events is not None:
                        budget = min(budget, max_events - self.stats.consumed)
                    try:
                        messages = kafka.consume(consumer, budget, 0.2, self._context)
                    except FatalKafkaError as err:
                        if err.code not in kafka.SELF_FENCING:
                            raise
                        consumer = self._reopen(consumer, str(err), err)
                        continue
                    for message in messages:
                        self._handle(message)
                    if messages or not self._next:
                        # Idle means caught up: time without an assignment (e.g. during a rebalance)
                        # does not count.
                        last_event = self._clock()
                    if self._due():
                        self._flush()
                    if max_events is not None and self.stats.consumed >= max_events:
                        break
                    if idle_exit_s is not None and self._clock() - last_event >= idle_exit_s:
                        break
                self._flush()
                clean = True
            finally:
                if not clean:
                    # After a failure nothing more is written (closing revokes, and a revoke flushes):
                    # the lake keeps its last whole commit and a restart resumes after it.
                    self._pending.clear()
                consumer.close()
                self._consumer = None
                if clean:
                    self._dead.close()
        log.info("lake sink stopped", consumed=self.stats.consumed, rows=self.stats.rows_written,
                 commits=self.stats.commits, dead_letters=sum(self.stats.dead_letters.values()))
        return self.stats

    def _open_consumer(self) -> Consumer:
        consumer = kafka.consumer(self._settings.kafka, self._settings.lake.group_id,
                                  **{"group.instance.id": instance_id(self._settings)})
        consumer.subscribe(list(self._tables), on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        self._consumer = consumer
        return consumer

    def _reopen(self, fenced: Consumer, reason: str, error: FatalKafkaError) -> Consumer:
        """Replace a consumer fenced (by its own rejoin, most likely) with a new one; the new one's
        assignment seeks every partition to the offset after the lake's last commit."""
        reopens = self._reopens.spend(reason, error)
        log.warning("kafka consumer reopened; events not yet committed to the lake are read again",
                    reason=reason, reopens=reopens, dropped=self._pending_count)
        self._pending.clear()
        self._pending_count = 0
        self._oldest_pending = None
        self._next.clear()
        self._abandoned.append(fenced)
        return self._open_consumer()

    # ------------------------------------------------------------------------------------ events

    def _handle(self, message: Message) -> None:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        key = (topic, partition)
        if offset < self._next.get(key, 0):
            # Already in the lake (e.g. a fetch issued before a seek): never write it twice.
            self.stats.skipped_duplicates += 1
            return
        self._next[key] = offset + 1
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(first_offset=offset, last_offset=offset)
        pending.last_offset = offset
        if self._oldest_pending is None:
            self._oldest_pending = self._clock()
        self._pending_count += 1
        self.stats.consumed += 1
        self.stats.last_event_at = self._clock()
        if self.stats.first_event_at is None:
            self.stats.first_event_at = self.stats.last_event_at
        try:
            event = self._parsers[topic](message.value())
        except ValidationError as invalid:
            self._dead.send_message(message, invalid.reason)
            pending.dead_letters += 1
            return
        pending.rows.append(lake_row(event, topic, partition, offset))

    def _due(self) -> bool:
        if self._pending_count >= self._batch_rows:
            return True
        return self._oldest_pending is not None and self._clock() - self._oldest_pending >= self._flush_interval_s

    def _flush(self, only: set[tuple[str, int]] | None = None) -> None:
        """Commit pending events (of ``only`` these partitions) to the lake, in the order the module doc gives."""
        keys = [k for k in self._pending if only is None or k in only]
        if not keys:
            return
        self._dead.flush()
        offsets = []
        for key in sorted(keys):
            pending = self._pending.pop(key)
            topic, partition = key
            commit = lake.write_commit(self._settings, self._tables[topic], topic, partition, pending.first_offset,
                                       pending.last_offset, pending.rows, pending.dead_letters)
            self.stats.rows_written += commit.rows
            self.stats.commits += 1
            offsets.append(TopicPartition(topic, partition, pending.last_offset + 1))
            log.info("lake commit", table=commit.table, topic=topic, partition=partition,
                     first_offset=commit.first_offset, last_offset=commit.last_offset, rows=commit.rows,
                     dead_letters=commit.dead_letters, files=len(commit.files))
        self._pending_count = sum(len(p.rows) + p.dead_letters for p in self._pending.values())
        self._oldest_pending = self._clock() if self._pending else None
        self.stats.dead_letters = self._dead.counts
        if self._consumer is not None:
            # Only lag monitoring reads these offsets (correctness comes from the manifest), so a
            # refused commit is logged and left to the next one.
            kafka.commit(self._consumer, offsets, self._context, asynchronous=True)
        if self._on_progress is not None:
            self._on_progress(self.stats)

    # ------------------------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        positions: dict[tuple[str, int], int] = {}
        for table in set(self._tables.values()):
            positions.update(lake.next_offsets(self._settings, table))
        for tp in partitions:
            start = positions.get((tp.topic, tp.partition))
            self._next[(tp.topic, tp.partition)] = start or 0
            # No commit yet: start at the beginning of the partition.
            tp.offset = start if start is not None else OFFSET_BEGINNING
            log.info("partition assigned", topic=tp.topic, partition=tp.partition, start_offset=start or "beginning")
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Still the owner here: commit what we hold for these partitions so the next owner resumes after it.
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._flush(only=revoked)
        for key in revoked:
            self._next.pop(key, None)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): another sink may own them already, so drop what we hold; it re-reads them.
        for tp in partitions:
            key = (tp.topic, tp.partition)
            dropped = self._pending.pop(key, None)
            self._next.pop(key, None)
            if dropped is not None:
                log.warning("partition lost, pending events dropped (re-read by the new owner)",
                            topic=tp.topic, partition=tp.partition, first_offset=dropped.first_offset)
        self._pending_count = sum(len(p.rows) + p.dead_letters for p in self._pending.values())
