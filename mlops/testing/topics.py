"""Writing readings to a test's topics and reading its committed output back."""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.testing.names import unique

__all__ = ["CommittedReader", "produce", "produce_readings", "topic_overrides"]


def topic_overrides(tag: str) -> dict[str, str]:
    """Topic names of their own for a test or benchmark run (``tag`` makes them unique)."""
    return {"readings": f"readings-{tag}", "predictions": f"predictions-{tag}", "dlq": f"dlq-{tag}",
            "model_events": f"events-{tag}", "labels": f"labels-{tag}"}


def produce(settings: Settings, values: list[bytes], keys: list[str | None]) -> None:
    """Produce raw values to the readings topic (keyed: one device stays in one partition) and flush."""
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))  # the broker auto-creates nothing
    errors: list[object] = []
    producer = kafka.producer(settings.kafka)
    for value, key in zip(values, keys, strict=True):
        kafka.produce(producer, settings.kafka.topics.readings, value, key,
                      on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(60) == 0 and not errors, f"readings not delivered: {errors[:3]}"


def produce_readings(settings: Settings, readings: list[dict[str, Any]]) -> None:
    """Produce readings (as JSON, keyed by device) to the readings topic and flush."""
    produce(settings, [json.dumps(r).encode() for r in readings], [r["device_id"] for r in readings])


class CommittedReader:
    """Reads a topic with read_committed from the start, accumulating JSON records."""

    def __init__(self, settings: Settings, topic: str, **consumer_config: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))  # else nothing to assign
        self._consumer = kafka.consumer(settings.kafka, group_id=unique("reader"), **consumer_config)
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, timeout_s: float = 0.2) -> int:
        """Read what is there within ``timeout_s``; return how many records were read so far."""
        for message in self._consumer.consume(1000, timeout_s):
            if message.error() is None:
                value = message.value()
                if value is None:
                    raise AssertionError(f"topic {message.topic()} partition {message.partition()} offset "
                                         f"{message.offset()}: a record without a value")
                self.records.append(json.loads(value))
                self.received_at.append(time.time())
        return len(self.records)

    def wait_for(self, count: int, timeout_s: float, alive: Any = None, poll_s: float = 0.2) -> int:
        """Poll until ``count`` records arrived; fail with what was seen after ``timeout_s``.

        ``poll_s`` is each poll's timeout: arrivals are stamped when a poll returns, so a caller that
        measures latency polls briefly."""
        deadline = time.monotonic() + timeout_s
        while self.poll(poll_s) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.records)} of {count} records after {timeout_s}s")
            if alive is not None and not alive():
                raise AssertionError(f"scorer exited with {len(self.records)} of {count} records")
        return len(self.records)

    def drain(self, timeout_s: float = 60.0) -> int:
        """Read until every partition's position reaches its high watermark: all that is committed now.

        Call once the writers have stopped; a count taken then cannot grow."""
        deadline = time.monotonic() + timeout_s
        assignment = self._consumer.assignment()
        while True:
            self.poll(0.2)
            behind = []
            for tp in self._consumer.position(assignment):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
                if high > 0 and tp.offset < high:
                    behind.append((tp.partition, tp.offset, high))
            if not behind:
                return len(self.records)
            if time.monotonic() > deadline:
                raise AssertionError(f"partitions still behind their high watermark: {behind}")

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
