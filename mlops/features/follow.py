"""`mlops features follow`: the Feast online store follows the predictions stream.

    status = FeatureFollower(settings).run(stop=stop_event)

One consumer (group ``mlops-features-follow``, ``read_committed``, no auto-commit) reads
``iot.predictions``. Each prediction carries the device, the event time, the model version and the
features the scorer computed (docs/contracts.md, "Predictions"); the latest one per device goes to
an :class:`~mlops.features.online_push.OnlinePusher`, which writes the pending rows every
``feast.push_interval_s`` seconds. A version's feature spec comes from the registry (its
``feature_spec`` tag, read by :func:`~mlops.registry.loader.load_version`), once per version.

Delivery: offsets are committed only after every row read up to them was written (or dropped on
purpose), so a crash replays predictions and never skips one; the writes are latest-wins, so a
replay ends where the stream ends. While writes fail (Feast or the registry down) nothing is
committed and the rows stay pending, one per device. A revoke (eager assignor: every partition at
once) writes and commits what is held; what could not be written is forgotten and read again by
the partitions' next owner.

Malformed predictions are counted and logged, not dead-lettered: the monitor reads the same
records and dead-letters them already. This process, not the scorer, pays for Feast (its import,
about 8 s of CPU, and writes that hold the GIL), so the scorer's throughput and latency do not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from confluent_kafka import Consumer, Message, TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.data.schemas import parse_prediction
from mlops.errors import ValidationError
from mlops.features.compute import FeatureSpec
from mlops.features.online_push import OnlinePusher
from mlops.log import get_logger
from mlops.registry.loader import load_version

__all__ = ["BATCH", "GROUP_ID", "POLL_TIMEOUT_S", "FeatureFollower", "FollowStatus"]

log = get_logger(__name__)

GROUP_ID = "mlops-features-follow"
BATCH = 500
POLL_TIMEOUT_S = 0.5


@dataclass
class FollowStatus:
    """Progress of a follower session, for status lines."""

    predictions: int = 0
    malformed: int = 0
    pushed: int = 0
    push_failures: int = 0
    dropped: int = 0
    pending: int = 0
    commits: int = 0


class FeatureFollower:
    """Consumes predictions and keeps each device's latest features in the online store."""

    def __init__(self, settings: Settings, group_id: str | None = None,
                 on_status: Callable[[FollowStatus], None] | None = None, status_every_s: float = 10.0) -> None:
        self.settings = settings
        self.group_id = group_id or GROUP_ID
        self.topic = settings.kafka.topics.predictions
        self.status = FollowStatus()
        self.pusher = OnlinePusher(settings, spec_of=self._spec_of)
        self._specs: dict[tuple[str, str], FeatureSpec] = {}
        self._offsets: dict[int, int] = {}  # partition -> offset after the last prediction handled
        self._on_status = on_status
        self._status_every_s = status_every_s
        self._reported: FollowStatus | None = None
        self._context = f"features follow (group {self.group_id})"

    def run(self, stop: threading.Event | None = None) -> FollowStatus:
        """Follow the predictions until ``stop`` is set; write and commit what is held before returning."""
        stop = stop or threading.Event()
        kafka.ensure_topics(self.settings.kafka, [t for t in kafka.design_topics(self.settings.kafka)
                                                  if t.name == self.topic])
        self.pusher.open()
        consumer = kafka.consumer(self.settings.kafka, self.group_id)
        consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        log.info("following predictions into the online store", topic=self.topic, group=self.group_id,
                 interval_s=self.settings.feast.push_interval_s)
        interval = self.settings.feast.push_interval_s
        next_flush = next_status = time.monotonic() + interval
        try:
            while not stop.is_set():
                for message in kafka.consume(consumer, BATCH, POLL_TIMEOUT_S, self._context):
                    self._handle(message)
                now = time.monotonic()
                if now >= next_flush:
                    self._flush_and_commit(consumer)
                    next_flush = time.monotonic() + interval
                if now >= next_status:
                    self._report()
                    next_status = now + self._status_every_s
            self._flush_and_commit(consumer)
        finally:
            consumer.close()
            self._report()
        return self.status

    # -- records ----------------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        self._offsets[partition] = offset + 1  # handled either way: a malformed record is not retried
        try:
            prediction = parse_prediction(message.value())
        except ValidationError as err:
            self.status.malformed += 1
            log.warning("malformed prediction skipped", topic=self.topic, partition=partition, offset=offset,
                        reason=err.reason[:200])
            return
        self.status.predictions += 1
        self.pusher.add(prediction.device_id, prediction.event_time, prediction.model_name,
                        prediction.model_version, prediction.features)

    def _spec_of(self, model_name: str, version: str) -> FeatureSpec:
        """The version's feature spec from the registry (loaded and checked once per version)."""

        key = (model_name, version)
        if key not in self._specs:
            self._specs[key] = load_version(self.settings, version, model_name).spec
        return self._specs[key]

    # -- writes and commits -----------------------------------------------------------------
    def _flush_and_commit(self, consumer: Consumer) -> bool:
        """Write the pending rows; only if all were handled, commit the offsets read so far."""
        if not self.pusher.flush():
            return False  # nothing committed: a crash now replays, the next flush retries
        if not self._offsets:
            return True
        offsets = [TopicPartition(self.topic, p, o) for p, o in self._offsets.items()]
        if not kafka.commit(consumer, offsets, self._context):
            return False  # e.g. a rebalance under way: the offsets are committed next time
        self._offsets = {}
        self.status.commits += 1
        return True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Still the owner here. The eager assignor revokes every partition at once, so whatever
        # cannot be written and committed now is dropped: the next owner reads it again.
        if not self._flush_and_commit(consumer):
            log.warning("partitions revoked with rows not written; their next owner re-reads them",
                        rows=self.pusher.pending_count())
        self.pusher.clear()
        self._offsets = {}

    def _report(self) -> None:
        counts = self.pusher.counts
        self.status.pushed, self.status.push_failures, self.status.dropped = (counts.pushed, counts.failures,
                                                                              counts.dropped)
        self.status.pending = self.pusher.pending_count()
        if self.status == self._reported:
            return  # an idle follower stays quiet
        self._reported = replace(self.status)
        log.info("features follow status", predictions=self.status.predictions, pushed=self.status.pushed,
                 pending=self.status.pending, malformed=self.status.malformed,
                 push_failures=self.status.push_failures, dropped=self.status.dropped, commits=self.status.commits)
        if self._on_status is not None:
            self._on_status(self.status)
