"""Dead letters on the real broker: with the helper's own producer and inside a Kafka transaction."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from mlops import kafka
from mlops.config import Settings
from mlops.data.dlq import MAX_DLQ_VALUE_BYTES, DeadLetters
from mlops.testing import unique

pytestmark = pytest.mark.integration


def _with_dlq(settings: Settings) -> Settings:
    topics = settings.kafka.topics.model_copy(update={"dlq": unique("test-dlq")})
    result = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topics": topics})})
    kafka.ensure_topics(result.kafka, [kafka.TopicSpec(result.kafka.topics.dlq, 1, {})])
    return result


def read_dead_letters(settings: Settings, expected: int, deadline_s: float = 30.0) -> list[dict[str, Any]]:
    """Every dead letter on the (unique) DLQ topic, once at least ``expected`` arrived and no more follow."""
    consumer = kafka.consumer(settings.kafka, unique("test-dlq-reader"))
    consumer.subscribe([settings.kafka.topics.dlq])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=100, timeout=0.5)
            records += [json.loads(m.value()) for m in batch if m.error() is None]
            if len(records) >= expected and not batch:
                break
    finally:
        consumer.close()
    return records


def test_any_input_becomes_a_dead_letter_with_source_and_counts(services) -> None:  # type: ignore[no-untyped-def]
    settings = _with_dlq(services)
    dead = DeadLetters(settings, "test-consumer")
    huge = b"\x01" * (2 * 1024 * 1024)  # larger than a Kafka record may be
    inputs = [(None, b"k0", "empty message (no value)"), (b"\xff\xfegarbage", None, "not valid JSON: x"),
              (huge, b"k2", "message is 2097152 bytes, larger than the 65536-byte limit")]
    for offset, (value, key, reason) in enumerate(inputs):
        dead.send(value=value, key=key, topic="iot.readings", partition=1, offset=100 + offset, reason=reason)
    dead.flush()

    records = sorted(read_dead_letters(settings, 3), key=lambda r: r["source"]["offset"])
    assert [r["source"] for r in records] == [{"topic": "iot.readings", "partition": 1, "offset": 100 + i}
                                              for i in range(3)]
    assert [r["reason"] for r in records] == [reason for _, _, reason in inputs]
    assert records[0]["value_b64"] is None and base64.b64decode(records[0]["key_b64"]) == b"k0"
    assert base64.b64decode(records[1]["value_b64"]) == b"\xff\xfegarbage" and records[1]["key_b64"] is None
    assert records[2]["value_truncated"] and records[2]["value_size"] == len(huge)
    assert len(base64.b64decode(records[2]["value_b64"])) == MAX_DLQ_VALUE_BYTES
    assert all(r["consumer"] == "test-consumer" for r in records)
    assert dead.counts == {"empty": 1, "invalid_json": 1, "too_large": 1}
    dead.close()


def test_dead_letters_commit_and_abort_with_the_callers_transaction(services) -> None:  # type: ignore[no-untyped-def]
    settings = _with_dlq(services)
    producer = kafka.transactional_producer(settings.kafka, unique("test-dlq-txn"))
    producer.init_transactions(30)
    dead = DeadLetters(settings, "test-scorer")

    producer.begin_transaction()
    dead.send(value=b"aborted", key=b"d", topic="t", partition=0, offset=1, reason="x", producer=producer)
    producer.abort_transaction(30)
    producer.begin_transaction()
    dead.send(value=b"committed", key=b"d", topic="t", partition=0, offset=2, reason="y", producer=producer)
    producer.commit_transaction(30)
    dead.flush()  # the caller's producer delivered everything; nothing failed

    records = read_dead_letters(settings, 1)  # read_committed: the aborted one is invisible
    assert [base64.b64decode(r["value_b64"]) for r in records] == [b"committed"]
    assert records[0]["source"]["offset"] == 2
    assert dead.counts == {"invalid_fields": 2}
