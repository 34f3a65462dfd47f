"""The consumers' one error policy (mlops.kafka.on_consumer_error) on real confluent-kafka errors and records."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from mlops import kafka
from mlops.errors import FatalKafkaError, ServiceError

CONTEXT = "lake sink (group g)"


def _record(error: KafkaError) -> Message:
    return Message(topic="iot.readings", partition=3, offset=912, error=error)


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._FATAL),  # the consumer's own fatal event: its fatal() says False
    KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True),
    KafkaError(KafkaError._STATE, "producer fenced", fatal=True),
    KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED),
])
def test_fatal_errors_stop_the_consumer_with_where_and_what_to_do(error: KafkaError) -> None:
    assert kafka.is_fatal(error)
    with pytest.raises(FatalKafkaError) as raised:
        kafka.on_consumer_error(error, _record(error), CONTEXT)
    text = str(raised.value)
    assert text.startswith(f"{CONTEXT}: topic iot.readings partition 3 offset 912: fatal Kafka error {error.name()}")
    assert error.str() in text
    assert raised.value.code == error.code() and raised.value.name == error.name()
    assert isinstance(raised.value, ServiceError)  # an MlopsError: `mlops` prints it and exits 1


def test_a_fencing_error_says_which_setting_collides() -> None:
    error = KafkaError(KafkaError._FATAL, "Fatal consumer error: Broker: Static consumer fenced by other consumer "
                                          "with same group.instance.id")
    with pytest.raises(FatalKafkaError, match=r"another process consumes with the same group\.instance\.id"):
        kafka.on_consumer_error(error, None, CONTEXT)


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._TRANSPORT, retriable=True),
    KafkaError(KafkaError._ALL_BROKERS_DOWN),
    KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True),
    KafkaError(KafkaError.NOT_COORDINATOR, retriable=True),
    KafkaError(KafkaError.REBALANCE_IN_PROGRESS),
    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART),  # may yet be created: the client subscribes when it is
    KafkaError(KafkaError._MAX_POLL_EXCEEDED),
])
def test_recoverable_errors_are_logged_with_topic_partition_and_offset(error: KafkaError,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    assert not kafka.is_fatal(error)
    with caplog.at_level(logging.WARNING, logger="mlops.kafka"):
        kafka.on_consumer_error(error, _record(error), CONTEXT)  # returns: the loop consumes again
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("kafka error, retrying")
    for field in ("topic=iot.readings", "partition=3", "offset=912", f"code={error.name()}",
                  f"retriable={error.retriable()}", 'consumer="lake sink (group g)"'):
        assert field in line


def test_a_refused_commit_is_logged_with_its_offset(caplog: pytest.LogCaptureFixture) -> None:
    error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    with caplog.at_level(logging.WARNING, logger="mlops.kafka"):
        kafka.on_consumer_error(error, TopicPartition("iot.labels", 1, 40), CONTEXT)
    assert "topic=iot.labels partition=1 offset=40" in caplog.records[0].getMessage()


def test_the_end_of_a_partition_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    error = KafkaError(KafkaError._PARTITION_EOF)
    with caplog.at_level(logging.DEBUG, logger="mlops.kafka"):
        kafka.on_consumer_error(error, _record(error), CONTEXT)
    assert not caplog.records
