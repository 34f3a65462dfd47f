"""Dead letters: the one place where every consumer sends an event it cannot use.

    dead = DeadLetters(settings, "lake-sink")
    dead.send_message(message, reason)                  # own idempotent producer
    dead.send_message(message, reason, producer=txn)    # inside the caller's Kafka transaction
    dead.flush()                                        # raises if a dead letter was not stored
    dead.counts                                         # {"invalid_json": 2, "invalid_fields": 5, ...}

A dead letter (format in docs/contracts.md, "Dead letters") keeps the original bytes and key in
base64, the reason, the source topic/partition/offset and the consumer's name. Nothing about the
input can make :meth:`DeadLetters.send` raise: ``None``, binary garbage and huge values are all
recorded. Only a broker that refuses to store the dead letter is an error, reported by
:meth:`DeadLetters.flush`, so that the caller does not mark the source offset as handled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.log import get_logger

__all__ = ["MAX_DLQ_VALUE_BYTES", "MAX_KAFKA_KEY_BYTES", "MAX_REASON_CHARS", "DeadLetters", "reason_kind"]

log = get_logger(__name__)

MAX_DLQ_VALUE_BYTES = 512 * 1024
"""Original values above this are cut: base64 grows them by 4/3 and the broker's default limit
for one record is 1 MiB. The dead letter then says so and carries the full size and SHA-256."""
MAX_REASON_CHARS = 2000
MAX_KAFKA_KEY_BYTES = 1024

# Reason prefixes written by mlops.data.schemas, mapped to a short kind for metrics. Reasons
# themselves name fields and sizes, so counting by reason text would give unbounded label sets.
_KINDS = (
    ("empty message", "empty"),
    ("message is ", "too_large"),
    ("not valid JSON", "invalid_json"),
    ("expected a JSON object", "not_an_object"),
)


def reason_kind(reason: str) -> str:
    """A small, stable category of a validation reason, for counters and dashboards."""
    for prefix, kind in _KINDS:
        if reason.startswith(prefix):
            return kind
    if "unknown schema version" in reason:
        return "unknown_version"
    return "invalid_fields"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _as_bytes(data: bytes | str | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return data.encode("utf-8", errors="surrogateescape")


def _kafka_key(key: bytes | str | None) -> bytes | None:
    # Same key as the source keeps a device's dead letters together; an absurd key would make the
    # broker refuse the dead letter itself, and the record carries it in key_b64 anyway.
    raw = _as_bytes(key)
    return raw if raw is not None and len(raw) <= MAX_KAFKA_KEY_BYTES else None


class DeadLetters:
    """Sends unusable events to the dead-letter topic and counts them per kind of reason."""

    def __init__(self, settings: Settings, consumer_name: str,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._settings = settings
        self._consumer_name = consumer_name
        self._now = now
        self.topic = settings.kafka.topics.dlq
        self._producer: Producer | None = None  # created on first use: constructors do no I/O
        self._counts: Counter[str] = Counter()
        self._failures: list[str] = []
        self._lock = threading.Lock()  # delivery callbacks run on whichever thread polls

    @property
    def counts(self) -> dict[str, int]:
        """Dead letters sent so far by this consumer, per kind of reason (see :func:`reason_kind`).

        Counts calls to :meth:`send`: a dead letter in a transaction that was then aborted and
        retried is counted each time.
        """
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def send_message(self, message: Message, reason: str, producer: Producer | None = None) -> None:
        """Dead-letter a consumed Kafka message (its value, key and coordinates)."""
        self.send(value=message.value(), key=message.key(), topic=message.topic() or "",
                  partition=message.partition() or 0, offset=message.offset() or 0,
                  reason=reason, producer=producer)

    def send(self, *, value: bytes | str | None, key: bytes | str | None, topic: str, partition: int,
             offset: int, reason: str, producer: Producer | None = None) -> None:
        """Produce one dead letter. ``producer``: the caller's (e.g. transactional) producer, else our own.

        Inside a transaction the dead letter commits or aborts with the caller's other output.
        """
        record = self.record(value=value, key=key, topic=topic, partition=partition, offset=offset, reason=reason)
        payload = json.dumps(record).encode()
        source = f"{topic}[{partition}]@{offset}"
        extra: dict[str, Any] = {}
        if producer is None:
            target = self._own_producer()
            extra["on_delivery"] = lambda err, _msg: self._delivered(err, source)
        else:
            # The caller's producer: its commit_transaction (or flush) reports failures, and an
            # abort purges our record on purpose, which is no failure of ours.
            target = producer
        kafka.produce(target, self.topic, payload, _kafka_key(key), **extra)
        self._counts[record["kind"]] += 1
        log.warning("dead letter", topic=topic, partition=partition, offset=offset, kind=record["kind"],
                    reason=record["reason"][:200], consumer=self._consumer_name)

    def record(self, *, value: bytes | str | None, key: bytes | str | None, topic: str, partition: int,
               offset: int, reason: str) -> dict[str, Any]:
        """The JSON document of one dead letter (without sending it)."""
        raw_value, raw_key = _as_bytes(value), _as_bytes(key)
        reason = str(reason)[:MAX_REASON_CHARS] or "unspecified"
        record: dict[str, Any] = {
            "reason": reason,
            "kind": reason_kind(reason),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "consumer": self._consumer_name,
            "time": self._now().isoformat(),
            "value_b64": _b64(raw_value),
            "key_b64": _b64(raw_key[:MAX_DLQ_VALUE_BYTES] if raw_key is not None else None),
        }
        if raw_value is not None and len(raw_value) > MAX_DLQ_VALUE_BYTES:
            record["value_b64"] = _b64(raw_value[:MAX_DLQ_VALUE_BYTES])
            record["value_truncated"] = True
            record["value_size"] = len(raw_value)
            record["value_sha256"] = hashlib.sha256(raw_value).hexdigest()
        return record

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until our own producer's dead letters are stored; raise ServiceError if any was not.

        With a caller's transactional producer, ``commit_transaction`` does this job instead.
        """
        if self._producer is not None:
            remaining = self._producer.flush(timeout_s)
            if remaining:
                raise ServiceError(f"dead-letter topic {self.topic}: {remaining} dead letters not delivered "
                                   f"after {timeout_s:.0f}s (is the broker reachable?)")
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            raise ServiceError(f"dead-letter topic {self.topic}: {len(failures)} dead letters were not stored, "
                               f"first: {failures[0]}")

    def close(self) -> None:
        """Flush our own producer (if any); safe to call twice."""
        if self._producer is not None:
            self.flush()
            self._producer = None

    def _own_producer(self) -> Producer:
        if self._producer is None:
            self._producer = kafka.producer(self._settings.kafka)
        return self._producer

    def _delivered(self, err: KafkaError | None, source: str) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(f"{source}: {err}")
