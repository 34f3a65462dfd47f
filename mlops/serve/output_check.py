"""Committed offsets checked against the outputs they stand for.

A committed offset says "every record below it has its output". Kafka's transaction protocol v1
(the one librdkafka speaks) can break that promise: a produce request of one transaction that is
retried across a broker restart can land in an output partition after that transaction's marker,
and the producer's next transaction then takes it along, commits it or, if it aborts, takes it
away, while the first transaction's consumer offsets stay committed (a "hanging transaction";
KIP-890 closes the hole in protocol v2). Seen once in the chaos test: 459 readings committed with
no prediction.

So every scorer transaction stores, in the metadata of each readings partition's committed offset,
the range it vouches for: its first record in that partition and the wall time at which the
transaction began. Whenever the scorer (re)starts a partition from its committed offset, it reads
the outputs (predictions, and this group's dead letters) written from that time on, for as long as
a transaction can stay open, and names the records of the range that have none. The scorer scores
exactly those again (:mod:`mlops.serve.scorer`).

Each readings partition's range covers only the last transaction that committed it. The loss needs
that transaction's producer to abort the next one, which the scorer does only just before it
restarts from the committed offsets, or which the broker does when a dead scorer's transaction
times out, before another scorer can take the partition. A stray record that no later
transaction's marker reaches keeps the output partition's last stable offset where it is: the check
reports it as a hanging transaction and rescores nothing.

The same hole opens the other way: a transaction's offset commit that lands after its marker is
taken away when the producer's next transaction aborts, while the first transaction's outputs stay
committed (seen once in the chaos test: 255 readings predicted twice after a restart). So the check
also reads which records at or past the committed offset already have an output, and says where the
first one without lies: the scorer resumes there, and those records only rebuild its windows.
Outputs are searched in the same window, from the committed transaction's start for as long as a
transaction can stay open, which holds the next transactions of a partition that is being scored.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import OffsetSpec

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.log import get_logger
from mlops.serve.feature_state import Partition

__all__ = ["OutputCheck", "Unverified", "Verdict", "decode_range", "encode_range"]

log = get_logger(__name__)

TIME_SLACK_MS = 2000
"""Leeway before a transaction's start: its records' timestamps come from the same client clock, in ms."""
CLOCK_SKEW_MS = 30_000
"""Leeway after a transaction's time-out, for the clocks of other scorers writing to the same partitions."""
READ_DEADLINE_S = 120.0
_STALE_METADATA = frozenset({KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                             KafkaError.NOT_LEADER_FOR_PARTITION})


@dataclass(frozen=True)
class Unverified:
    """Records ``[first, committed)`` of a partition whose outputs a transaction begun at ``began_ms`` wrote."""

    first: int
    began_ms: int


def encode_range(first: int, began_ms: int) -> str:
    """The committed offset's metadata for a transaction begun at ``began_ms`` whose first record is ``first``."""
    return json.dumps({"first": first, "began_ms": began_ms}, separators=(",", ":"))


def decode_range(metadata: str | None) -> Unverified | None:
    """The range a committed offset's metadata vouches for; None if it names none (an offset from elsewhere)."""
    try:
        data = json.loads(metadata or "")
        return Unverified(int(data["first"]), int(data["began_ms"]))
    except (ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class Verdict:
    """What the outputs say about each checked partition's committed offset."""

    missing: dict[Partition, list[int]]
    """Committed records without an output: to be scored again."""
    resume: dict[Partition, int]
    """Where scoring resumes when records at or past the committed offset already have an output
    (their offset commit was lost); partitions whose committed offset is right are absent."""


class _Source(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class _Output(msgspec.Struct):
    """The fields a prediction and a dead letter share: which record they stand for, and who wrote it."""

    source: _Source | None = None
    consumer: str | None = None


_decode_output = msgspec.json.Decoder(_Output).decode


class OutputCheck:
    """Finds committed readings of a scorer group that have no committed output."""

    def __init__(self, settings: Settings, group_id: str, timeout_s: float) -> None:
        self.settings = settings
        self.topics = settings.kafka.topics
        self.timeout_s = timeout_s
        """How long a transaction can stay open: the window searched for outputs, and the wait for them."""
        self._dead_letter_prefix = f"scorer:{group_id}:"
        self._reader: Consumer | None = None
        self._admin = kafka.admin(settings.kafka)

    def missing(self, ranges: dict[Partition, tuple[Unverified, int]]) -> Verdict | None:
        """For each partition's ``(range, committed offset)``, its committed records that have no output,
        and where to resume if records past the committed offset have one.

        None if the outputs cannot be told yet: an output partition's last stable offset stayed below
        its end past the time a transaction can stay open (a hanging transaction, logged)."""
        verdict = Verdict({}, {})
        if not ranges:
            return verdict
        reader = self._reader_client()
        outputs = self._output_partitions(reader)
        ends = self._stable_ends(reader, outputs)
        if ends is None:
            return None
        named = self._named_offsets(reader, outputs, ends, {key: unverified.began_ms
                                                            for key, (unverified, _c) in ranges.items()})
        for key, (unverified, committed) in sorted(ranges.items()):
            records = self._record_offsets(reader, key, unverified.first, committed)
            wanted = set(records) - named.get(key, set())
            if wanted:
                verdict.missing[key] = sorted(wanted)
                log.warning("committed readings without output", topic=key[0], partition=key[1],
                            records=len(records), missing=len(wanted), first=min(wanted), last=max(wanted))
            ahead = {offset for offset in named.get(key, set()) if offset >= committed}
            resume = self._first_without_output(reader, key, committed, ahead)
            if resume > committed:
                verdict.resume[key] = resume
                log.warning("readings past the committed offset already have outputs: resuming after them",
                            topic=key[0], partition=key[1], committed=committed, resume=resume)
        return verdict

    def _first_without_output(self, reader: Consumer, key: Partition, committed: int, ahead: set[int]) -> int:
        """The first record at or after ``committed`` that no output in ``ahead`` names."""
        if not ahead:
            return committed
        resume = committed
        for offset in self._record_offsets(reader, key, committed, max(ahead) + 1):
            if offset not in ahead:
                break
            resume = offset + 1
        return resume

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- reading ----------------------------------------------------------------------------
    def _reader_client(self) -> Consumer:
        if self._reader is None:
            # Never subscribes and never commits: the group id is only the client's required name.
            self._reader = kafka.consumer(self.settings.kafka, f"{self._dead_letter_prefix}output-check",
                                          **{"enable.partition.eof": False})
        return self._reader

    def _output_partitions(self, reader: Consumer) -> list[TopicPartition]:
        partitions = []
        for topic in (self.topics.predictions, self.topics.dlq):
            listing = kafka.retrying(functools.partial(reader.list_topics, topic, timeout=self.timeout_s))
            metadata = listing.topics[topic]
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        return partitions

    def _stable_ends(self, reader: Consumer, outputs: list[TopicPartition]) -> dict[Partition, int] | None:
        """Each output partition's high watermark now, once its last stable offset has reached it.

        An output the check must see was written before the check began, so it lies below these ends;
        reading with read_committed sees it only once every transaction open below them has ended."""
        ends = {(tp.topic, tp.partition): self._watermarks(reader, (tp.topic, tp.partition))[1] for tp in outputs}
        deadline = time.monotonic() + self.timeout_s + TIME_SLACK_MS / 1000
        while True:
            stable = kafka.retrying(lambda: self._last_stable_offsets(outputs))
            behind = {key: end for key, end in ends.items() if stable[key] < end}
            if not behind:
                return ends
            if time.monotonic() > deadline:
                for (topic, partition), end in sorted(behind.items()):
                    log.error("hanging transaction: last stable offset stuck below the end; committed "
                              "readings are not checked against their outputs", topic=topic, partition=partition,
                              last_stable_offset=stable[(topic, partition)], high_watermark=end)
                return None
            time.sleep(0.1)

    def _last_stable_offsets(self, outputs: list[TopicPartition]) -> dict[Partition, int]:
        futures = self._admin.list_offsets({tp: OffsetSpec.latest() for tp in outputs},
                                           isolation_level=IsolationLevel.READ_COMMITTED,
                                           request_timeout=self.timeout_s)
        try:
            return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}
        except KafkaException as err:
            if err.args[0].code() in _STALE_METADATA:
                # An admin client that lived through a broker restart keeps asking with the leader
                # epochs it knew and is refused (seen for 60 s on end): a new one starts afresh.
                self._admin = kafka.admin(self.settings.kafka)
            raise

    def _watermarks(self, reader: Consumer, key: Partition) -> tuple[int, int]:
        return kafka.retrying(lambda: reader.get_watermark_offsets(TopicPartition(*key), timeout=self.timeout_s))

    def _record_offsets(self, reader: Consumer, key: Partition, first: int, committed: int) -> list[int]:
        """The offsets of the committed records in ``[first, committed)``.

        Markers and aborted records take offsets too, and no output stands for them."""
        topic, partition = key
        low, _high = self._watermarks(reader, key)
        start = max(first, low)
        if start >= committed:
            return []
        offsets: list[int] = []
        for message in self._read(reader, [TopicPartition(topic, partition, start)], {key: committed}):
            offsets.append(message.offset() or 0)
        return offsets

    def _named_offsets(self, reader: Consumer, outputs: list[TopicPartition], ends: dict[Partition, int],
                       began_ms: dict[Partition, int]) -> dict[Partition, set[int]]:
        """Per readings partition, the offsets that this group's outputs name, read from the earliest
        transaction's start for as long as the latest one can stay open."""
        since = min(began_ms.values()) - TIME_SLACK_MS
        until = max(began_ms.values()) + int(self.timeout_s * 1000) + CLOCK_SKEW_MS
        starts = kafka.retrying(lambda: reader.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, since) for tp in outputs], timeout=self.timeout_s))
        # -1: no stable record at or after `since`, so none to read (every end is stable by now).
        positions = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in starts
                     if 0 <= tp.offset < ends[(tp.topic, tp.partition)]]
        stop_at = {(tp.topic, tp.partition): ends[(tp.topic, tp.partition)] for tp in positions}
        named: dict[Partition, set[int]] = {}
        for message in self._read(reader, positions, stop_at, until_ms=until):
            output = _decode_output(message.value() or b"{}")
            source = output.source
            if source is None or (source.topic, source.partition) not in began_ms:
                continue
            if message.topic() == self.topics.dlq and not (output.consumer or "").startswith(self._dead_letter_prefix):
                continue  # another consumer's dead letter (the lake sink's) says nothing about the scorer
            named.setdefault((source.topic, source.partition), set()).add(source.offset)
        return named

    def _read(self, reader: Consumer, positions: list[TopicPartition], ends: dict[Partition, int],
              until_ms: int | None = None) -> Iterator[Message]:
        """The committed records from ``positions`` up to each partition's end, or its first one after ``until_ms``."""
        if not positions:
            return
        reader.assign(positions)
        open_ = set(ends)
        deadline = time.monotonic() + READ_DEADLINE_S
        try:
            while open_:
                if time.monotonic() > deadline:
                    raise ServiceError(f"kafka {self.settings.kafka.bootstrap_servers}: reading "
                                       f"{', '.join(f'{t}[{p}]' for t, p in sorted(open_))} up to "
                                       f"{READ_DEADLINE_S:.0f} s did not reach the end")
                for message in kafka.consume(reader, 500, 0.2, "scorer output check"):
                    key = (message.topic() or "", message.partition() or 0)
                    if key not in open_:
                        continue
                    if (message.offset() or 0) >= ends[key] or (
                            until_ms is not None and message.timestamp()[1] > until_ms):
                        open_.discard(key)
                        continue
                    yield message
                # Markers and aborted records are never delivered: the position says when the end is passed.
                for tp in reader.position([TopicPartition(t, p) for t, p in sorted(open_)]):
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        open_.discard((tp.topic, tp.partition))
        finally:
            reader.unassign()
