"""The one thin layer over confluent-kafka that every producer, consumer and admin call uses.

Clients are created by these functions when asked for, never at import time, and always from
:class:`~mlops.config.KafkaSettings`, so that security or tuning properties set in configuration
reach every client.

Every consumer reads through :func:`consume` and commits through :func:`commit`, which hand each
error Kafka reports to one policy, ``on_error`` (default :func:`on_consumer_error`): an error the
client recovers from by itself (a broker restarting, a coordinator moving, a topic not created yet)
is logged with its topic, partition and offset and the loop carries on, so the client retries; a
fatal one (:func:`is_fatal`: this member fenced by another with the same ``group.instance.id``,
authentication or authorisation refused) raises :class:`~mlops.errors.FatalKafkaError`, which
stops the process with the message and exit code 1 (``mlops.cli.main``).

One fatal error is often not another process's doing: a static member whose session expired while a
broker restarted can be fenced by its own rejoin (:data:`SELF_FENCING`). A long-running consumer
then opens a new client instead of stopping, within a :class:`ReopenBudget`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mlops.config import KafkaSettings
from mlops.errors import FatalKafkaError, ServiceError
from mlops.log import get_logger

__all__ = ["RETRY_DEADLINE_S", "OnError", "TopicSpec", "admin", "commit", "commit_end_offsets", "committed_total",
           "consume", "consumer", "design_topics", "ensure_topics", "is_fatal", "is_ready", "on_consumer_error",
           "produce", "producer", "retrying", "topic_counts", "transactional_producer", "wait_until_ready"]

log = get_logger(__name__)
T = TypeVar("T")


def _base(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap_servers, **settings.client}


def producer(settings: KafkaSettings, **extra: Any) -> Producer:
    """An idempotent producer (acks=all): retries never duplicate a record within a partition."""
    return Producer({**_base(settings), "enable.idempotence": True, "linger.ms": 5, **extra})


def transactional_producer(settings: KafkaSettings, transactional_id: str, **extra: Any) -> Producer:
    """A producer for exactly-once consume-transform-produce; call ``init_transactions`` before use.

    A short retry backoff: right after a commit the coordinator is still writing the transaction's
    markers and answers the next transaction's first request (AddOffsetsToTxn, AddPartitionsToTxn)
    with CONCURRENT_TRANSACTIONS, which the client retries after ``retry.backoff.ms``. At the
    default 100 ms every micro-batch waited that long in ``send_offsets_to_transaction`` (measured:
    p50 105 ms per call; 2 ms backoff: p50 5 ms), which set the scorer's latency and throughput.
    """
    return producer(settings, **{"transactional.id": transactional_id, "retry.backoff.ms": 2,
                                 "retry.backoff.max.ms": 100, **extra})


def consumer(settings: KafkaSettings, group_id: str, **extra: Any) -> Consumer:
    """A consumer that commits nothing on its own and reads only committed transactional data."""
    return Consumer(
        {
            **_base(settings),
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **extra,
        }
    )


def produce(producer: Producer, topic: str, value: bytes, key: bytes | str | None, **extra: Any) -> None:
    """Produce one record, waiting while the client's local queue is full instead of raising BufferError.

    ``extra`` goes to ``Producer.produce`` (e.g. ``on_delivery``). Every producer of the project uses
    this, so a fast source (a replay, a benchmark, a test) never fails on the client's own back-pressure.
    """
    while True:
        try:
            producer.produce(topic, value=value, key=key, **extra)
            break
        except BufferError:
            producer.poll(0.05)  # serve delivery reports to make room, then try again
    producer.poll(0)


# --- consuming: one error policy for every consumer ---------------------------------------------

OnError = Callable[[KafkaError, Message | TopicPartition | None, str], None]
"""What a consumer does with an error Kafka reports: return to carry on (the client retries), raise to stop.

Called with the error, the record or offset it concerns (None when Kafka names neither) and who was
doing what (``"lake sink (group mlops-lake-sink)"``)."""

_FATAL_CODES = frozenset({
    # The consumer's own fatal event: librdkafka stopped this client for good (its fatal() says False).
    KafkaError._FATAL,
    # Another member joined with this group.instance.id: two copies of one static member.
    KafkaError.FENCED_INSTANCE_ID,
    # Refused credentials or ACLs: no retry of ours changes them, an operator must.
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
})
_HINTS = {
    KafkaError.FENCED_INSTANCE_ID: "another process consumes with the same group.instance.id: stop one of them",
    KafkaError._AUTHENTICATION: "check the credentials in kafka.client",
    KafkaError.SASL_AUTHENTICATION_FAILED: "check the credentials in kafka.client",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "grant this principal read access to the topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "grant this principal access to the consumer group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "grant this principal the cluster permission it needs",
}


def is_fatal(error: KafkaError) -> bool:
    """True when retrying cannot help: a fatal client error, fencing, or refused credentials or ACLs.

    Everything else a consumer sees (transport failures, a coordinator moving, a rebalance under
    way, an unknown topic that may yet be created) the client retries by itself.
    """
    return bool(error.fatal()) or error.code() in _FATAL_CODES


RETRY_DEADLINE_S = 60.0
_TRANSIENT_LOOKUP_CODES = frozenset({
    # Answers of a broker that has just restarted, to a client whose metadata is older than it:
    # the client refreshes its metadata, and the next call goes to the right leader.
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
})


def retrying(call: Callable[[], T], retry_timeouts: bool = True, deadline_s: float = RETRY_DEADLINE_S) -> T:
    """``call()``, called again while its error is transient, until ``deadline_s``; then the error is raised.

    Transient: retriable as the client says, a broker's answer that only stale metadata explains,
    or a local time-out (a broker restarting) unless ``retry_timeouts`` is False."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            timed_out = error.code() == KafkaError._TIMED_OUT
            transient = retry_timeouts if timed_out else (error.retriable()
                                                          or error.code() in _TRANSIENT_LOOKUP_CODES)
            if not transient or time.monotonic() > deadline:
                raise
            log.warning("retrying kafka call", error=error)
            time.sleep(0.1)


def _position(record: Message | TopicPartition | None) -> tuple[str | None, int | None, int | None]:
    if record is None:
        return None, None, None
    if isinstance(record, TopicPartition):
        return record.topic, record.partition, record.offset
    return record.topic(), record.partition(), record.offset()


def on_consumer_error(error: KafkaError, record: Message | TopicPartition | None, context: str) -> None:
    """The default policy: log a recoverable error with topic, partition and offset; raise a fatal one.

    Raises :class:`FatalKafkaError` naming the consumer, where, the error and what to do.
    """
    if error.code() == KafkaError._PARTITION_EOF:
        return  # the end of a partition is news, not an error
    topic, partition, offset = _position(record)
    if is_fatal(error):
        where = f": topic {topic} partition {partition} offset {offset}" if topic else ""  # a client error names none
        fenced = error.code() == KafkaError.FENCED_INSTANCE_ID or "fenced" in error.str().lower()
        hint = _HINTS.get(KafkaError.FENCED_INSTANCE_ID if fenced else error.code(),
                          "the client cannot recover; fix the cause and start the process again")
        raise FatalKafkaError(f"{context}{where}: fatal Kafka error {error.name()}: {error.str()} ({hint})",
                              code=error.code(), name=error.name())
    log.warning("kafka error, retrying", consumer=context, topic=topic, partition=partition, offset=offset,
                code=error.name(), retriable=error.retriable(), error=error.str())


def consume(consumer: Consumer, max_messages: int, timeout_s: float, context: str,
            on_error: OnError = on_consumer_error) -> list[Message]:
    """One ``Consumer.consume`` call: the records, after every error among them went through ``on_error``.

    ``context`` names the consumer in logs and errors. The caller's loop calling again is the retry.
    """
    messages = consumer.consume(max_messages, timeout_s)
    if all(message.error() is None for message in messages):
        return messages
    records = []
    for message in messages:
        error = message.error()
        if error is None:
            records.append(message)
        else:
            on_error(error, message, context)
    return records


def commit(consumer: Consumer, offsets: list[TopicPartition], context: str, *, asynchronous: bool = False,
           on_error: OnError = on_consumer_error) -> bool:
    """Commit ``offsets``; False when Kafka refused some (after ``on_error``): the next commit carries them.

    A refusal is usually passing (a rebalance under way, the coordinator moving, the broker
    restarting): the records stay uncommitted and are re-read after a crash, never lost.
    """
    try:
        if asynchronous:  # the broker's answer is not awaited: only a request refused at once shows here
            consumer.commit(offsets=offsets, asynchronous=True)
            return True
        result = consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() == KafkaError._NO_OFFSET:
            return True  # nothing new to commit
        on_error(error, offsets[0] if len(offsets) == 1 else None, f"{context}, committing {len(offsets)} offsets")
        return False
    refused = False
    for tp in result:
        if tp.error is not None:
            refused = True
            on_error(tp.error, tp, f"{context}, committing")
    return not refused


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(_base(settings))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def design_topics(settings: KafkaSettings) -> list[TopicSpec]:
    """The topics named in the design, with their configured partition counts."""
    names, parts = settings.topics, settings.partitions
    return [
        TopicSpec(names.readings, parts.readings, {}),
        TopicSpec(names.labels, parts.labels, {}),
        TopicSpec(names.predictions, parts.predictions, {}),
        TopicSpec(names.dlq, parts.dlq, {}),
        # Compacted: the latest event per model name is what a late joiner needs.
        TopicSpec(names.model_events, parts.model_events, {"cleanup.policy": "compact"}),
    ]


def ensure_topics(settings: KafkaSettings, topics: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=settings.replication_factor,
                 config=t.config)
        for t in topics
        if t.name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in client.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as err:
            if err.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise ServiceError(f"kafka {settings.bootstrap_servers}: cannot create topic {name}: {err}") from err
    return created


def wait_until_ready(settings: KafkaSettings, timeout_s: float, alive: Any = None) -> None:
    """Block until the broker answers a metadata request with at least one broker.

    ``alive`` is an optional callable; when it returns False (the process died) waiting stops early.
    """
    deadline = time.monotonic() + timeout_s
    client = _quiet_admin(settings)
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServiceError(f"kafka {settings.bootstrap_servers}: broker process exited during start-up")
        try:
            metadata = client.list_topics(timeout=2.0)
            if metadata.brokers:
                return
        except KafkaException as err:
            last_error = err
        time.sleep(0.2)
    raise ServiceError(
        f"kafka {settings.bootstrap_servers}: not ready after {timeout_s:.0f}s"
        + (f" (last error: {last_error})" if last_error else "")
    )


def _quiet_admin(settings: KafkaSettings) -> AdminClient:
    # Probing a broker that is not up yet is expected to fail; keep librdkafka's
    # "connection refused" lines out of the user's terminal (syslog level 0: emergencies only).
    return AdminClient({**_base(settings), "log_level": 0})


def is_ready(settings: KafkaSettings, timeout_s: float = 2.0) -> bool:
    try:
        return bool(_quiet_admin(settings).list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def topic_counts(settings: KafkaSettings, topic: str, timeout_s: float = 10.0) -> int:
    """Number of records in a topic by watermarks (includes transaction markers and aborted data)."""
    c = consumer(settings, group_id="mlops-watermarks")
    try:
        metadata = c.list_topics(topic, timeout=timeout_s)
        total = 0
        from confluent_kafka import TopicPartition

        for pid in metadata.topics[topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, pid), timeout=timeout_s)
            total += high - low
        return total
    finally:
        c.close()


def commit_end_offsets(settings: KafkaSettings, group: str, topic: str) -> None:
    """Set ``group``'s committed offsets on ``topic`` to its current end (the group must be idle).

    One call that either works or raises: there is no consumer loop for :func:`commit` to retry in.
    """
    client = consumer(settings, group)
    try:
        metadata = client.list_topics(topic, timeout=30)
        ends = [TopicPartition(topic, p, client.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
                for p in metadata.topics[topic].partitions]
        client.commit(offsets=ends, asynchronous=False)
    finally:
        client.close()


def committed_total(settings: KafkaSettings, group: str, topic: str) -> int:
    """Sum over ``topic``'s partitions of ``group``'s committed offsets: the records it has processed."""
    client = consumer(settings, group)
    try:
        partitions = client.list_topics(topic, timeout=10).topics[topic].partitions
        committed = client.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return sum(max(0, tp.offset) for tp in committed)
    finally:
        client.close()


SELF_FENCING = frozenset({KafkaError.FENCED_INSTANCE_ID, KafkaError._FATAL})
"""Consumer errors after which a static member reopens its client rather than stop: librdkafka can
fence a static member by its own rejoin once its session expired while a broker restarted
(librdkafka issue 3437), and reports it as FENCED_INSTANCE_ID or as a fatal error."""


class ReopenBudget:
    """At most ``limit`` client reopens in any ``window_s`` seconds: one more means the fencing was real
    (a second process with the same ``group.instance.id``), and :meth:`spend` raises it."""

    def __init__(self, context: str, limit: int = 3, window_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.context = context
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self.spent: deque[float] = deque()

    def spend(self, reason: str, error: Exception | None = None) -> int:
        """Count one reopen, or raise FatalKafkaError if the budget is used up; the reopens in the window."""
        now = self.clock()
        while self.spent and now - self.spent[0] > self.window_s:
            self.spent.popleft()
        if len(self.spent) >= self.limit:
            # The reason comes first: it names the client and the error, as if no reopen had been tried.
            raise FatalKafkaError(f"{reason} [{self.context}: Kafka clients already reopened {self.limit} "
                                  f"time(s) in {self.window_s:.0f} s; another process with this group "
                                  "instance id? Stop one of them]",
                                  code=getattr(error, "code", KafkaError._FATAL),
                                  name=getattr(error, "name", "_FATAL"))
        self.spent.append(now)
        return len(self.spent)
