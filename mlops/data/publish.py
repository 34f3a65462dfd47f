"""Put a stream of :class:`Reading` / :class:`Label` events on Kafka: the thin layer over the generators.

Readings go to ``kafka.topics.readings`` and labels to ``kafka.topics.labels``, JSON from
:func:`~mlops.data.schemas.encode`, key = device id, through the idempotent producer of
:mod:`mlops.kafka`. Rate control paces *readings* per second of wall time; the clock and the
sleep function are injected so tests and benchmarks control them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message

from mlops import kafka
from mlops.config import Settings
from mlops.data.schemas import Label, Reading, encode
from mlops.errors import ServiceError
from mlops.log import get_logger

__all__ = ["Pacer", "Position", "Progress", "PublishReport", "publish"]

log = get_logger(__name__)

Progress = Callable[[int, int], None]
"""Called with (readings produced, labels produced) every few hundred events."""


@dataclass
class Position:
    """Where one watched reading landed: its index in the run and its partition and offset."""

    index: int
    partition: int = -1
    offset: int = -1


@dataclass
class PublishReport:
    readings: int = 0
    labels: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    first_match: Position | None = None
    """The first reading for which ``watch`` was true (e.g. the first post-onset reading)."""
    first_match_offsets: dict[int, int] = field(default_factory=dict)
    """Per readings partition: offset of the first reading there for which ``watch`` was true."""

    @property
    def events_per_s(self) -> float:
        return (self.readings + self.labels) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"readings": self.readings, "labels": self.labels, "delivered": self.delivered,
                "failed": self.failed, "seconds": round(self.seconds, 3),
                "events_per_s": round(self.events_per_s, 1)}


class Pacer:
    """Sleeps so that the n-th event is not released before ``n / rate`` seconds of wall time."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive events/s, got {rate}")
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self._start = clock()
        self._count = 0

    def wait(self) -> None:
        self._count += 1
        if self.rate is None:
            return
        ahead = self._count / self.rate - (self._clock() - self._start)
        if ahead > 0:
            self._sleep(ahead)


def publish(events: Iterable[Reading | Label], settings: Settings, *, rate: float | None = None,
            watch: Callable[[Reading], bool] | None = None, progress: Progress | None = None,
            clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
            flush_timeout_s: float = 60.0) -> PublishReport:
    """Produce every event, flush, and return the counts.

    Raises :class:`ServiceError` if any record could not be delivered (the count says how many).
    """
    topics = settings.kafka.topics
    # Create the two topics if missing (idempotent), so they get the configured partition counts.
    kafka.ensure_topics(settings.kafka, [spec for spec in kafka.design_topics(settings.kafka)
                                         if spec.name in (topics.readings, topics.labels)])
    producer = kafka.producer(settings.kafka)
    report = PublishReport()
    pacer = Pacer(rate, clock, sleep)
    started = clock()
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message, watched: bool = False, first: bool = False) -> None:
        if err is not None:
            report.failed += 1
            if len(errors) < 5:
                errors.append(f"{msg.topic()}: {err}")
            return
        report.delivered += 1
        if watched:
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            # Delivery reports come in offset order within a partition: the first one is the lowest.
            report.first_match_offsets.setdefault(partition, offset)
            if first and report.first_match is not None:
                report.first_match.partition, report.first_match.offset = partition, offset

    for event in events:
        if isinstance(event, Reading):
            pacer.wait()
            watched = watch is not None and watch(event)
            first = watched and report.first_match is None
            if first:
                report.first_match = Position(index=report.readings)
            _produce(producer, topics.readings, event,
                     lambda err, msg, w=watched, f=first: delivered(err, msg, w, f))
            report.readings += 1
        else:
            _produce(producer, topics.labels, event, delivered)
            report.labels += 1
        if progress is not None and (report.readings + report.labels) % 500 == 0:
            progress(report.readings, report.labels)
    remaining = producer.flush(flush_timeout_s)
    report.seconds = clock() - started
    if progress is not None:
        progress(report.readings, report.labels)
    log.info("published", readings=report.readings, labels=report.labels, delivered=report.delivered,
             failed=report.failed, seconds=round(report.seconds, 2))
    if remaining or report.failed:
        raise ServiceError(
            f"kafka {settings.kafka.bootstrap_servers}: {report.failed} record(s) failed and {remaining} "
            f"undelivered after {flush_timeout_s:.0f}s of {report.readings + report.labels}: {errors}")
    return report


def _produce(producer: Any, topic: str, event: Reading | Label, on_delivery: Callable[..., None]) -> None:
    kafka.produce(producer, topic, encode(event), event.device_id.encode(), on_delivery=on_delivery)
