"""The streaming scorer: readings in, predictions out, exactly once.

One loop, one thread (plus the model watcher's):

    swap in a newly promoted model if the watcher has one ready (no fetched record in hand)
    -> consume up to batch_size readings (rebalance callbacks run only here)
    -> validate; invalid readings become dead letters
    -> per-device windows -> features (shared kernel) -> one vectorised predict_proba
    -> one Kafka transaction: predictions + dead letters + the consumed offsets

Because a transaction is begun and committed inside one iteration and the consumer is never
polled while it is open, a rebalance can never find an open transaction: revoking a partition
needs no commit or abort. If the broker rejects a commit (abortable error, e.g. a stale group
generation after a rebalance), the transaction is aborted, every owned partition is rewound to
its committed offset and the windows are rebuilt (:mod:`mlops.serve.feature_state`), so the
batch is scored again from the same state. Retriable errors are retried; fatal ones (a newer
process with the same transactional.id fenced us) stop the scorer with a clear error.

Failures of the client library itself are recovered by reopening both clients (:meth:`Scorer._reopen`):
a transactional request that timed out (a broker restarting) may still be applied later, to the
client's next transaction, since librdkafka speaks transaction protocol v1, without KIP-890's
defence; ``send_offsets_to_transaction`` can block forever, past its own timeout, when the group
coordinator goes away (librdkafka issues 5456 and 5511), so every transactional call runs under a
hard deadline; and a static member whose session expired while the broker restarted can be fenced
by its own rejoin. A new producer with the same transactional.id bumps the epoch, which fences
every request of the old one and aborts its open transaction; a new consumer takes the partitions
back and rebuilds the windows from the committed offsets, so nothing is lost or scored twice. More
than its :class:`~mlops.kafka.ReopenBudget` allows means a real second process: the scorer stops with the error.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.data.dlq import DeadLetters
from mlops.data.schemas import Reading, encode_predictions, parse_reading
from mlops.errors import FatalKafkaError, ServiceError, ValidationError
from mlops.heap import freeze_long_lived
from mlops.log import get_logger
from mlops.registry.loader import LoadedModel, load_champion
from mlops.registry.watcher import ModelWatcher
from mlops.serve.feature_state import Partition, PartitionedWindows
from mlops.serve.metrics import ScorerMetrics
from mlops.serve.output_check import OutputCheck, Unverified, Verdict, decode_range, encode_range

__all__ = [
    "DEFAULT_GROUP",
    "HUNG_CALL_S",
    "KAFKA_TIMEOUT_S",
    "ClientHung",
    "ScoreSummary",
    "Scorer",
    "transactional_id",
]

log = get_logger(__name__)

DEFAULT_GROUP = "mlops-scorer"
KAFKA_TIMEOUT_S = 30.0
HUNG_CALL_S = KAFKA_TIMEOUT_S + 15.0
"""A transactional call that has not returned by then never will: the clients are reopened."""


class ClientHung(Exception):
    """A Kafka client call did not return within :data:`HUNG_CALL_S`, whatever timeout it was given."""


@dataclass
class ScoreSummary:
    """What one run of the scorer did."""

    scored: int = 0
    dead_letters: int = 0
    batches: int = 0
    aborted: int = 0
    reopened: int = 0
    rescored: int = 0
    """Committed readings found without output (:mod:`mlops.serve.output_check`) and scored again."""
    model_version: str = ""

    @property
    def processed(self) -> int:
        return self.scored + self.dead_letters


def transactional_id(settings: Settings, group_id: str, instance_id: str) -> str:
    """Stable per process: a restarted scorer fences its dead predecessor and aborts its open transaction."""
    return f"{settings.scorer.transactional_id_prefix}-{group_id}-{instance_id}"


class Scorer:
    """Exactly-once streaming scorer for one consumer-group member. Create, then :meth:`run`."""

    def __init__(
        self,
        settings: Settings,
        group_id: str = DEFAULT_GROUP,
        instance_id: str = "0",
        batch_size: int | None = None,
        metrics: ScorerMetrics | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.instance_id = instance_id
        self.batch_size = batch_size or settings.scorer.batch_size
        self.metrics = metrics or ScorerMetrics()
        self.now = now
        self.topics = settings.kafka.topics
        self.summary = ScoreSummary()
        self.model: LoadedModel | None = None
        self.state: PartitionedWindows | None = None
        self._assigned: set[Partition] = set()
        self._scored_until: dict[Partition, int] = {}
        """Per owned partition, the offset after the last record this process committed a prediction for."""
        self._dead = DeadLetters(settings, consumer_name=f"scorer:{group_id}:{instance_id}", now=now)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._context = f"scorer (group {group_id}, instance {instance_id})"
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="scorer-txn")
        self._abandoned: list[Consumer | Producer] = []
        """Clients replaced by :meth:`_reopen`; kept alive, never closed: closing a stuck client can block too."""
        self._reopens = kafka.ReopenBudget(self._context)
        self._check = OutputCheck(settings, group_id, settings.scorer.transaction_timeout_ms / 1000)
        self._inherited: dict[Partition, Unverified] = {}
        """Per partition, the range its committed offset vouched for when the scorer last started it."""

    # -- lifecycle --------------------------------------------------------------------------
    def run(
        self,
        max_events: int | None = None,
        stop: threading.Event | None = None,
        on_batch: Callable[[ScoreSummary], None] | None = None,
    ) -> ScoreSummary:
        """Score until ``stop`` is set or ``max_events`` readings were handled (scored or dead-lettered)."""
        stop = stop or threading.Event()
        wanted = {self.topics.readings, self.topics.predictions, self.topics.dlq, self.topics.model_events}
        kafka.ensure_topics(self.settings.kafka, [t for t in kafka.design_topics(self.settings.kafka)
                                                  if t.name in wanted])
        self._use_model(load_champion(self.settings))
        assert self.model is not None
        self.state = PartitionedWindows(self.model.spec)
        watcher = ModelWatcher(self.settings, current_version=self.model.version,
                               on_failure=lambda _version, _error: self.metrics.load_failures.inc())
        self._producer = self._open_producer()
        self._consumer = self._open_consumer()
        watcher.start()
        next_lag = 0.0
        try:
            while not stop.is_set() and (max_events is None or self.summary.processed < max_events):
                limit = self.batch_size if max_events is None else min(self.batch_size,
                                                                       max_events - self.summary.processed)
                # Swap only with no fetched record in hand: a swap that rebuilds the windows rewinds
                # the consumer, and records fetched before that seek would end the replay early,
                # so the rewound (already committed) records would be scored a second time.
                swapped = watcher.take()
                if swapped is not None:
                    self._swap(swapped)
                try:
                    messages = kafka.consume(self._consumer, limit, self.settings.scorer.poll_timeout_s,
                                             self._context)
                except FatalKafkaError as err:
                    if err.code not in kafka.SELF_FENCING:
                        raise
                    self._reopen(str(err), err)
                    continue
                batch, rescore = self._triage(messages)
                if batch:
                    self._score(batch, rescore)
                    if on_batch is not None:
                        on_batch(self.summary)
                if time.monotonic() >= next_lag:
                    self._update_lag()
                    next_lag = time.monotonic() + 1.0
        finally:
            watcher.stop()
            self._consumer.close()
            self._producer.flush(KAFKA_TIMEOUT_S)
            self._calls.shutdown(wait=False)
            self._check.close()
        return self.summary

    def _open_producer(self) -> Producer:
        tid = transactional_id(self.settings, self.group_id, self.instance_id)
        producer = kafka.transactional_producer(
            self.settings.kafka, tid, **{"transaction.timeout.ms": self.settings.scorer.transaction_timeout_ms}
        )
        try:
            # Fences any earlier process with this id and aborts its unfinished transaction; waits
            # for a broker that is restarting, as a transactional call does.
            kafka.retrying(lambda: producer.init_transactions(KAFKA_TIMEOUT_S))
        except KafkaException as err:
            raise ServiceError(f"kafka {self.settings.kafka.bootstrap_servers}: init_transactions for "
                               f"transactional.id {tid!r} failed: {err}") from err
        log.info("transactional producer ready", transactional_id=tid)
        return producer

    def _open_consumer(self) -> Consumer:
        consumer = kafka.consumer(
            self.settings.kafka,
            self.group_id,
            **{
                # Static membership: a restarted process takes its partitions back without a rebalance.
                "group.instance.id": f"{self.group_id}-{self.instance_id}",
                "session.timeout.ms": self.settings.scorer.session_timeout_ms,
                "partition.assignment.strategy": "range",
            },
        )
        consumer.subscribe([self.topics.readings], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        return consumer

    # -- rebalance and rewind ---------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return  # a client replaced by _reopen: the new one owns the partitions now
        foreign = sorted({tp.topic for tp in partitions} - {self.topics.readings})
        if foreign:
            # A static member that rejoins subscribed to another topic can be handed its previous
            # assignment (seen: a group reused for a new readings topic). Checking, replaying or
            # scoring those partitions would write another topic's readings into this one's outputs.
            log.error("assigned partitions of a topic this scorer does not read; left unassigned",
                      topics=",".join(foreign), subscribed=self.topics.readings)
            partitions = [tp for tp in partitions if tp.topic == self.topics.readings]
        positions = self._replay_positions(consumer, partitions)
        consumer.assign(positions)
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        log.info("partitions assigned", topic=self.topics.readings,
                 partitions=",".join(f"{tp.partition}@{tp.offset}" for tp in positions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        # No transaction is open here (see module docstring): only the state has to go.
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        assert self.state is not None
        self.state.drop(revoked)
        self._assigned -= set(revoked)
        for key in revoked:
            self._scored_until.pop(key, None)
        log.info("partitions revoked", topic=self.topics.readings,
                 partitions=",".join(str(p) for _t, p in revoked))

    def _replay_positions(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where to start each partition so that the windows are rebuilt before scoring resumes."""
        assert self.state is not None
        lookback = self.settings.scorer.state_lookback
        committed = self._committed(consumer, partitions)
        verdict = self._lost_outputs(committed)
        positions = []
        for tp in committed:
            key = (tp.topic, tp.partition)
            # What this process committed itself is authoritative too, and so are outputs past the
            # committed offset: a replay must never end below a record that already has its output,
            # even if the broker's answer lags the commit or lost it.
            tp.offset = max(tp.offset, self._scored_until.get(key, -1), verdict.resume.get(key, -1))
            if tp.offset < 0:  # nothing committed yet: everything is new
                self.state.drop([key])
                positions.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
                continue
            partition = TopicPartition(tp.topic, tp.partition)
            low, _high = kafka.retrying(functools.partial(consumer.get_watermark_offsets, partition,
                                                     timeout=KAFKA_TIMEOUT_S))
            missing = verdict.missing.get(key, [])
            self.state.begin_replay(key, tp.offset, rescore=missing)
            start = min(missing, default=tp.offset)
            positions.append(TopicPartition(tp.topic, tp.partition, max(low, start - lookback)))
        return positions

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions``, waiting out a broker that restarts.

        A broker that restarts answers only once its group coordinator has loaded: wait for it (as
        for a transactional call) rather than let the rebalance callback kill the process. An
        answer that never comes can be an offset commit of this scorer's producer left pending
        (it landed after its transaction's marker, across a broker restart): it blocks every
        request for the group's offsets (UNSTABLE_OFFSET_COMMIT, which librdkafka retries without
        end) until that producer's next marker. Seen in CI on 2026-12-06: a scorer started after a
        kill waited 60 s and died. An aborted transaction that holds the group's offsets writes
        that marker."""
        ask = functools.partial(consumer.committed, [TopicPartition(tp.topic, tp.partition) for tp in partitions],
                                timeout=KAFKA_TIMEOUT_S)
        try:
            return list(ask())
        except KafkaException as err:
            if err.args[0].code() != KafkaError._TIMED_OUT:
                raise
            log.warning("committed offsets not answered; aborting a transaction to end any offset commit "
                        "of this producer left pending", error=str(err), partitions=len(partitions))
            self._end_pending_offsets(consumer, partitions)
        return list(kafka.retrying(ask))

    def _end_pending_offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Begin a transaction, add the group's offsets to it (values never applied) and abort it."""
        producer = self._producer
        assert producer is not None
        placeholders = [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]
        try:
            producer.begin_transaction()
            try:
                self._bounded(lambda: producer.send_offsets_to_transaction(
                    placeholders, consumer.consumer_group_metadata(), KAFKA_TIMEOUT_S))
            finally:
                self._bounded(lambda: producer.abort_transaction(KAFKA_TIMEOUT_S))
        except (KafkaException, ClientHung) as err:
            # The second wait for the offsets below says whether it helped.
            log.warning("aborting the transaction that ends pending offset commits failed", error=str(err))

    def _lost_outputs(self, committed: list[TopicPartition]) -> Verdict:
        """Per partition, the committed records below its offset whose output is not committed, and
        where to resume if records past it already have outputs (:class:`OutputCheck`)."""
        ranges = {}
        self._inherited = {}
        for tp in committed:
            vouched = decode_range(tp.metadata)
            if vouched is not None and tp.offset >= 0:
                ranges[(tp.topic, tp.partition)] = (vouched, tp.offset)
                self._inherited[(tp.topic, tp.partition)] = vouched
        try:
            verdict = self._check.missing(ranges)
        except (KafkaException, ServiceError) as err:
            # As before the check existed: resume from the committed offsets, and say what went unchecked.
            log.error("committed readings not checked against their outputs", error=str(err),
                      partitions=",".join(f"{t}[{p}]" for t, p in sorted(ranges)))
            return Verdict({}, {})
        return verdict if verdict is not None else Verdict({}, {})

    def _rewind(self) -> None:
        """Back to the committed offsets of every owned partition, rebuilding the windows on the way."""
        assert self._consumer is not None
        owned = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        for position in self._replay_positions(self._consumer, owned):
            self._consumer.seek(position)
        log.warning("rewound to committed offsets", partitions=len(owned))

    # -- models -----------------------------------------------------------------------------
    def _use_model(self, model: LoadedModel) -> None:
        self.model = model
        self.summary.model_version = model.version
        self.metrics.set_model(model.name, model.version, model.run_id)
        # Else every full collection walks the ~250,000 objects of the libraries and the model
        # and stops the loop for 220-235 ms (measured twice in 12 s at 2,000 readings/s).
        freeze_long_lived()

    def _swap(self, model: LoadedModel) -> None:
        old = self.model
        self._use_model(model)
        if old is None or old.spec != model.spec or self.state is None:
            # Different sensors or window: rebuild the windows for the new spec from the topic.
            self.state = PartitionedWindows(model.spec)
            if self._consumer is not None and self._assigned:
                self._rewind()
        log.info("model swapped in", model_name=model.name, model_version=model.version,
                 previous_version=old.version if old else None, run_id=model.run_id)

    # -- the batch --------------------------------------------------------------------------
    def _triage(self, messages: list[Message]) -> tuple[list[Message], bool]:
        """Drop stale records, feed replayed records to the state, return the batch to score.

        The batch is either live records, or replayed records whose output was lost (True). Those are
        scored in their place in the replay: the batch ends before the next record that must come
        after them, and the partitions are sought back to their first record not handled here.
        Kafka's errors never get here: :func:`mlops.kafka.consume` logged them, or stopped the scorer."""
        assert self.state is not None and self.model is not None
        live: list[Message] = []
        rescore: list[Message] = []
        replayed: list[tuple[Partition, str, dict[str, float], int]] = []
        for index, message in enumerate(messages):
            key = (message.topic() or "", message.partition() or 0)
            offset = message.offset() or 0
            if key not in self._assigned:
                continue  # fetched before a revoke; its new owner scores it
            if self.state.is_replay(key, offset):
                if self.state.is_rescore(key, offset) and not live:
                    self.state.replay(replayed)  # its windows first, as when it was first scored
                    replayed = []
                    rescore.append(message)
                    continue
                if not rescore and not self.state.is_rescore(key, offset):
                    reading = self._valid(message)
                    if isinstance(reading, Reading):
                        replayed.append((key, reading.device_id, reading.sensors, reading.cycle))
                    continue
            elif not rescore:
                self.state.replay_done(key, offset)
                live.append(message)
                continue
            self._hold_back(messages[index:])
            break
        self.state.replay(replayed)
        return (rescore, True) if rescore else (live, False)

    def _hold_back(self, messages: list[Message]) -> None:
        """Seek back so that these fetched records come again in the next batch."""
        assert self._consumer is not None
        first: dict[Partition, int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            if key in self._assigned:
                first.setdefault(key, message.offset() or 0)
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    def _valid(self, message: Message) -> Reading | str:
        """The reading, or the reason it cannot be scored by the current model."""
        assert self.model is not None
        try:
            reading = parse_reading(message.value())
        except ValidationError as err:
            return err.reason
        missing = [s for s in self.model.spec.sensors if s not in reading.sensors]
        if missing:
            return (f"field 'sensors': lacks {', '.join(missing)} needed by model {self.model.name} "
                    f"version {self.model.version}")
        return reading

    def _score(self, batch: list[Message], rescore: bool = False) -> None:
        """Score the batch in one transaction; ``rescore``: replayed records whose output was lost."""
        assert self.state is not None and self.model is not None
        started = time.perf_counter()
        model = self.model
        readings: list[Reading] = []
        sources: list[tuple[str, int, int]] = []
        dead: list[tuple[Message, str]] = []
        for message in batch:
            outcome = self._valid(message)
            if isinstance(outcome, Reading):
                readings.append(outcome)
                sources.append((message.topic() or "", message.partition() or 0, message.offset() or 0))
            else:
                dead.append((message, outcome))
        features = self.state.update_and_compute(
            ((topic, partition), r.device_id, r.sensors, r.cycle)
            for r, (topic, partition, _o) in zip(readings, sources, strict=True)
        )
        payloads: list[bytes] = []
        if readings:
            probabilities = model.predict_proba(features)
            payloads = encode_predictions(readings, sources, features, probabilities, model, self.now())
        offsets = self._offsets(batch, rescore)
        if not self._transact(readings, payloads, dead, offsets):
            return
        if rescore:
            for key, handled in _offsets_by_partition(batch).items():
                self.state.rescored(key, handled)
            self.summary.rescored += len(batch)
            log.warning("committed readings without output scored again", records=len(batch),
                        partitions=",".join(f"{t}[{p}]" for t, p in sorted(offsets)), model_version=model.version)
        self._scored_until.update({key: tp.offset for key, tp in offsets.items()})
        elapsed = time.perf_counter() - started
        self.summary.batches += 1
        self.summary.scored += len(readings)
        self.summary.dead_letters += len(dead)
        self.metrics.events.labels(outcome="scored").inc(len(readings))
        self.metrics.events.labels(outcome="dead_letter").inc(len(dead))
        self.metrics.dead_letters.inc(len(dead))
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_seconds.observe(elapsed)
        last = batch[-1]
        log.debug("batch committed", topic=last.topic(), partition=last.partition(), offset=last.offset(),
                  scored=len(readings), dead_letters=len(dead), model_version=model.version,
                  seconds=round(elapsed, 4))

    def _offsets(self, batch: list[Message], rescore: bool) -> dict[Partition, TopicPartition]:
        """The offsets the batch's transaction commits, each with the range of records it vouches for.

        A live batch moves each partition past its last record and vouches for its own records,
        from now. A rescored batch keeps the committed offset (moving it back would score the
        records after it twice) and narrows the range it inherited to the records still unchecked."""
        assert self.state is not None
        commits: dict[Partition, TopicPartition] = {}
        began_ms = int(time.time() * 1000)  # before any record of the transaction takes its timestamp
        for (topic, partition), handled in _offsets_by_partition(batch).items():
            if rescore:
                offset = self.state.replay_end((topic, partition))
                vouched = encode_range(handled[-1] + 1, self._inherited[(topic, partition)].began_ms)
            else:
                offset, vouched = handled[-1] + 1, encode_range(handled[0], began_ms)
            commits[(topic, partition)] = TopicPartition(topic, partition, offset, metadata=vouched)
        return commits

    def _transact(self, readings: list[Reading], payloads: list[bytes], dead: list[tuple[Message, str]],
                  offsets: dict[Partition, TopicPartition]) -> bool:
        """One transaction for the batch. False if it had to be aborted (the batch will be re-read)."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        topic = self.topics.predictions
        try:
            producer.begin_transaction()
            for reading, payload in zip(readings, payloads, strict=True):
                kafka.produce(producer, topic, payload, reading.device_id)
            for message, reason in dead:
                self._dead.send_message(message, reason, producer=producer)
            tps = list(offsets.values())
            # A timed-out send_offsets is not retried: after a broker restart the retried call can
            # wait forever for a request the old coordinator never answered (seen in the chaos
            # test). Nothing is committed yet, so reopening the clients and re-reading lose nothing.
            group = consumer.consumer_group_metadata()
            kafka.retrying(lambda: self._bounded(lambda: producer.send_offsets_to_transaction(
                tps, group, KAFKA_TIMEOUT_S)), retry_timeouts=False)
            kafka.retrying(lambda: self._bounded(lambda: producer.commit_transaction(KAFKA_TIMEOUT_S)))
            return True
        except ClientHung as hung:
            # Unknown whether the transaction commits: the reopened clients start from what did.
            self._reopen(str(hung))
            return False
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError._TIMED_OUT:
                # A request that timed out (a broker restarting) may still be applied later, to this
                # client's next transaction: librdkafka speaks transaction protocol v1, without
                # KIP-890's defence. A new producer bumps the epoch, which fences every request of
                # the old one and aborts its open transaction; the new consumer starts from what committed.
                self._reopen(str(error))
                return False
            if not error.txn_requires_abort():
                raise FatalKafkaError(f"{self._context}: transaction failed fatally: {error} (another process "
                                      "with the same transactional.id?)", code=error.code(), name=error.name()) from exc
            # The broker answered and refused (e.g. a stale group generation after a rebalance). The
            # transaction is not aborted on this producer: abort_transaction purges its in-flight
            # produce requests without waiting for them, and one that still lands would join this
            # producer's next transaction (the re-scored batch) and duplicate its outputs. A new
            # producer aborts it on the broker and bumps the epoch, fencing those requests.
            log.warning("transaction aborted; rewinding", error=error, partitions=len(offsets))
            try:
                self._replace_producer()
                self._rewind()
            except (ServiceError, KafkaException) as failed:
                self._reopen(f"rewind after {error}: {failed}")
                return False
            self.summary.aborted += 1
            self.metrics.aborted.inc()
            return False

    def _replace_producer(self) -> None:
        """A new transactional producer with the same id; the old one is kept alive, never closed (it may be stuck)."""
        assert self._producer is not None
        self._producer.purge(blocking=False)  # drops what it still queues; a stuck client must not block us
        self._abandoned.append(self._producer)
        self._producer = self._open_producer()

    def _bounded(self, call: Callable[[], Any]) -> Any:
        """``call()`` on the transaction thread, raising :class:`ClientHung` if it outlasts :data:`HUNG_CALL_S`."""
        future = self._calls.submit(call)
        try:
            return future.result(timeout=HUNG_CALL_S)
        except FutureTimeout:
            # The stuck call keeps its thread: the next call gets a fresh one.
            self._calls.shutdown(wait=False)
            self._calls = ThreadPoolExecutor(1, thread_name_prefix="scorer-txn")
            raise ClientHung(f"{self._context}: a transactional Kafka call did not return within "
                             f"{HUNG_CALL_S:.0f} s") from None

    def _reopen(self, reason: str, error: Exception | None = None) -> None:
        """Replace the producer and the consumer; the new consumer's assignment rebuilds the windows.

        The new producer's ``init_transactions`` fences the old one and aborts its open transaction;
        the new consumer joins with the same static id, which fences the old one and takes its
        partitions back, replayed from the committed offsets (:meth:`_on_assign`)."""
        reopens = self._reopens.spend(reason, error)
        log.warning("kafka clients reopened", reason=reason, reopens=reopens)
        assert self.state is not None and self._consumer is not None and self._producer is not None
        self._abandoned.append(self._consumer)
        self.state.clear()
        self._assigned = set()
        self._replace_producer()
        self._consumer = self._open_consumer()
        self.summary.reopened += 1
        self.metrics.reopened.inc()

    def _update_lag(self) -> None:
        assert self._consumer is not None
        owned = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not owned:
            return
        for tp in self._consumer.position(owned):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (0, -1)
            if tp.offset >= 0 and high >= 0:
                self.metrics.lag.labels(partition=str(tp.partition)).set(max(0, high - tp.offset))


def _offsets_by_partition(batch: list[Message]) -> dict[Partition, list[int]]:
    """The batch's offsets per partition, in order."""
    offsets: dict[Partition, list[int]] = {}
    for message in batch:
        offsets.setdefault((message.topic() or "", message.partition() or 0), []).append(message.offset() or 0)
    return offsets

