"""The one thin layer over confluent-kafka that every producer, consumer and admin call uses.

Clients are created by these functions when asked for, never at import time, and always from
:class:`~mlops.config.KafkaSettings`, so that security or tuning properties set in configuration
reach every client.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from mlops.config import KafkaSettings
from mlops.errors import ServiceError


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
