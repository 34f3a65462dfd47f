"""`mlops monitor`: the long-running consumer that turns predictions and late labels into window results.

    monitor = Monitor(settings)
    monitor.on_window(controller.on_window)          # the loop controller subscribes here
    summary = monitor.run(max_windows=10, idle_exit_s=30)

One consumer (group ``monitor.group_id``, ``read_committed``) reads the predictions and the labels
topics. Predictions go into drift windows and into the label join (:mod:`mlops.monitor.windows`);
each closed window becomes a :class:`~mlops.store.results.WindowResult` that is saved to the
database and handed to every ``on_window`` callback, in this order; its Evidently report is
written to disk and to the session's MLflow run on the report thread
(:class:`~mlops.monitor.reports.ReportWriter`), so neither the consumer nor the loop controller
waits for it. Stopping the monitor drains the reports still queued.

Judging: :mod:`mlops.monitor.judge` (the same functions the loop benchmark calls). Champion
changes: windows are per model version and each version's drift is judged against that version's
own reference data and drift calibration (loaded once per version from its MLflow run), so a new
``model_version`` in the predictions switches the reference by itself. Without a ``probability``
column in the reference, the version's first window is the reference of its prediction drift.
A performance window of a version that replaced another also carries the replaced version's metrics
on the same events (``previous_f1``, ...), scored from the features the predictions carry at that
model's own threshold.

Delivery: at least once. Offsets are committed after every batch, but never past a prediction that
an open window or the label join still holds, so a restart re-reads what was in memory; windows
around a restart may count a few predictions twice. Malformed records go to the dead-letter topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from confluent_kafka import TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.data.dlq import DeadLetters
from mlops.data.schemas import Position, parse_label, parse_prediction
from mlops.errors import MlopsError, ValidationError
from mlops.log import get_logger
from mlops.monitor import judge, reports
from mlops.monitor.windows import (
    ClosedWindow,
    LabelJoin,
    PartitionMerge,
    PerformanceWindows,
    WindowBuilder,
)
from mlops.registry.loader import load_version
from mlops.store import results
from mlops.store.results import WindowResult

__all__ = ["Monitor", "MonitorStatus", "WindowCallback"]

log = get_logger(__name__)
WindowCallback = Callable[[WindowResult], None]


@dataclass
class MonitorStatus:
    """Progress of a monitor session, for status lines."""

    predictions: int = 0
    labels: int = 0
    dead_letters: int = 0
    windows: int = 0
    latest_drift_share: float | None = None
    latest_f1: float | None = None
    model_version: str | None = None
    pending_labels: int = 0
    reports_pending: int = 0
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


class Monitor:
    """Consumes predictions and labels, closes windows, records and publishes their results."""

    def __init__(self, settings: Settings, *, group_id: str | None = None,
                 on_status: Callable[[MonitorStatus], None] | None = None, status_every_s: float = 1.0) -> None:
        self.settings = settings
        self.group_id = group_id or settings.monitor.group_id
        self._context = f"monitor (group {self.group_id})"
        self.topics = settings.kafka.topics
        policy, features = settings.policy, settings.features
        self.windows = WindowBuilder(policy.window_mode, policy.window_size, policy.window_seconds,
                                     settings.monitor.window_grace_s, settings.monitor.min_window)
        self.merge = PartitionMerge(settings.monitor.partition_wait_s)
        self.join = LabelJoin(features.horizon_cycles, features.cycle_seconds, policy.label_lateness_s,
                              settings.monitor.max_pending_per_device)
        self.performance = PerformanceWindows(policy.window_size)
        self.status = MonitorStatus()
        self._callbacks: list[WindowCallback] = []
        self._on_status = on_status
        self._status_every_s = status_every_s
        self._references: dict[tuple[str, str], judge.ModelReference] = {}
        self._first_probabilities: dict[tuple[str, str], pd.Series] = {}
        self._replaced: dict[tuple[str, str], str] = {}  # version -> the version it replaced
        self._models: dict[tuple[str, str], Any] = {}
        self._last_version: tuple[str, str] | None = None
        self._seen: set[tuple[str, str]] = set()
        self._writer: reports.ReportWriter | None = None

    def on_window(self, callback: WindowCallback) -> WindowCallback:
        """Subscribe to every window result (after it is saved and logged); usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    # --- the loop ---------------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_exit_s: float | None = None,
            stop: threading.Event | None = None) -> MonitorStatus:
        """Consume until ``max_windows`` results, ``idle_exit_s`` without records, or ``stop`` is set."""

        engine = results.engine_for(self.settings)
        run = reports.MonitorRun.start(self.settings, tags={
            "mlops.predictions_topic": self.topics.predictions, "mlops.labels_topic": self.topics.labels,
            "mlops.group_id": self.group_id})
        self.status.run_id = run.run_id
        policy = self.settings.policy
        run.log_params({"window_mode": policy.window_mode, "window_size": policy.window_size,
                        "window_seconds": policy.window_seconds, "label_lateness_s": policy.label_lateness_s,
                        "horizon_cycles": self.settings.features.horizon_cycles})
        writer = reports.ReportWriter(run, self.settings.reports_dir, engine)
        self._writer = writer
        dead = DeadLetters(self.settings, "monitor")
        consumer = kafka.consumer(self.settings.kafka, self.group_id)
        consumer.subscribe([self.topics.predictions, self.topics.labels])
        failed = True
        last_record, last_status = time.monotonic(), 0.0
        try:
            while not (stop is not None and stop.is_set()):
                # Errors go to the one policy: logged and retried, or fatal and the monitor stops.
                messages = kafka.consume(consumer, 500, self.settings.monitor.poll_timeout_s, self._context)
                closed: list[ClosedWindow] = []
                now = time.monotonic()
                self.merge.track([(tp.topic, tp.partition) for tp in consumer.assignment()
                                  if tp.topic == self.topics.predictions], now)
                for message in messages:
                    last_record = now
                    closed.extend(self._handle(message, dead, now))
                for prediction in self.merge.release(time.monotonic()):  # the fleet in event-time order
                    closed.extend(self.windows.add(prediction))
                    closed.extend(self._performance_windows(self.join.add_prediction(prediction)))
                for window in closed:
                    self._publish(*self._judge(window), engine, writer)
                if messages:
                    dead.flush()  # a dead letter must be stored before its offset is committed
                    self._commit(consumer)
                if time.monotonic() - last_status >= self._status_every_s:
                    last_status = time.monotonic()
                    self._report_status(dead)
                if max_windows is not None and self.status.windows >= max_windows:
                    break
                if idle_exit_s is not None and time.monotonic() - last_record >= idle_exit_s:
                    log.info("monitor idle, exiting", idle_s=idle_exit_s)
                    break
            failed = False
        except KeyboardInterrupt:
            failed = False  # Ctrl-C is the normal way to stop a long-running monitor
            log.info("monitor interrupted")
        finally:
            self._report_status(dead)
            consumer.close()
            dead.close()
            writer.close()
            run.finish(failed=failed)
        return self.status

    def _handle(self, message: Any, dead: Any, now: float) -> list[ClosedWindow]:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        try:
            if topic == self.topics.labels:
                label = parse_label(message.value())
                self.status.labels += 1
                return self._performance_windows(self.join.add_label(label))
            prediction = parse_prediction(message.value(), Position(topic, partition, offset))
        except ValidationError as err:
            log.warning("malformed record sent to the dead-letter topic", topic=topic, partition=partition,
                        offset=offset, reason=err.reason)
            dead.send_message(message, err.reason)
            return []
        self.status.predictions += 1
        version = (prediction.model_name, prediction.model_version)
        if version != self._last_version:
            # Only a version's first appearance is a change of champion; a flip back is partitions interleaving.
            if self._last_version is not None and version not in self._seen and version[0] == self._last_version[0]:
                self._replaced[version] = self._last_version[1]
            self._seen.add(version)
            log.info("model version in predictions", model_name=version[0], model_version=version[1],
                     previous=self._last_version[1] if self._last_version else None)
            self._last_version = version
            self.status.model_version = version[1]
        self.merge.add(prediction, now)  # to the windows and the label join once released
        return []

    def _performance_windows(self, judged: list[Any]) -> list[ClosedWindow]:
        return [w for w in (self.performance.add(j) for j in judged) if w is not None]

    def _commit(self, consumer: Any) -> None:
        positions = consumer.position(consumer.assignment())
        # Never commit past a prediction that is still held in memory (open window or label join).
        held: dict[tuple[str, int], int] = {}
        for prediction in self.merge.held() + self.windows.held() + self.join.held() + self.performance.held():
            if prediction.position is not None:
                key = (prediction.position.topic, prediction.position.partition)
                held[key] = min(held.get(key, prediction.position.offset), prediction.position.offset)
        offsets = [TopicPartition(tp.topic, tp.partition, min(tp.offset, held.get((tp.topic, tp.partition), tp.offset)))
                   for tp in positions if tp.offset >= 0]
        if offsets:
            kafka.commit(consumer, offsets, self._context)  # refused (a rebalance): the next batch commits

    # --- judging a window -------------------------------------------------------------------
    def _judge(self, window: ClosedWindow) -> tuple[WindowResult, Callable[[], Any]]:
        """The window's result (without id yet) and the function that builds its Evidently snapshot."""
        policy = self.settings.policy
        if window.kind == "performance":
            judgement = judge.judge_performance(window, policy, self._previous_model(window))
            return judgement.result, judgement.report
        version = (window.model_name, window.model_version)
        reference = self._reference(version)
        prediction_reference = None
        if "probability" not in reference.frame.columns:
            prediction_reference = self._first_probabilities.get(version)
            if prediction_reference is None:
                self._first_probabilities[version] = pd.Series([p.probability for p in window.predictions])
        judgement = judge.judge_drift(window, reference, policy, prediction_reference)
        return judgement.result, judgement.report

    def _reference(self, version: tuple[str, str]) -> judge.ModelReference:
        if version not in self._references:
            self._references[version] = judge.load_model_reference(self.settings, *version)
        return self._references[version]

    def _previous_model(self, window: ClosedWindow) -> Any:
        """The version this one replaced, to score the same events (for rollback after a promotion); None if none."""
        previous = self._replaced.get((window.model_name, window.model_version))
        if previous is None:
            return None

        key = (window.model_name, previous)
        if key not in self._models:
            try:
                self._models[key] = load_version(self.settings, previous, window.model_name)
            except (MlopsError, KeyError, ValueError) as err:
                log.warning("cannot load the replaced version to score this window", model_version=previous,
                            error=str(err))
                return None
        return self._models[key]

    # --- publishing -------------------------------------------------------------------------
    def _publish(self, result: WindowResult, snapshot: Callable[[], Any], engine: Any,
                 writer: reports.ReportWriter) -> None:
        result = results.save(engine, replace(result, session_run_id=writer.run.run_id))
        writer.submit(result, snapshot)
        self.status.windows += 1
        if result.kind == "drift":
            self.status.latest_drift_share = result.drift_share
        elif result.metrics is not None:
            self.status.latest_f1 = result.metrics.get("f1")
        log.info("window closed", window_id=result.window_id, kind=result.kind, model_version=result.model_version,
                 n=result.n_predictions, drift_share=result.drift_share, drift_score=result.drift_score,
                 drift_threshold=result.drift_threshold, drifted=result.drifted,
                 prediction_drift=result.prediction_drift, f1=(result.metrics or {}).get("f1"),
                 reports_pending=writer.pending)
        for callback in self._callbacks:
            callback(result)

    def _report_status(self, dead: Any) -> None:
        self.status.pending_labels = self.join.pending
        self.status.reports_pending = self._writer.pending if self._writer is not None else 0
        self.status.dead_letters = dead.total
        self.status.counts = {**{f"window_{k}": v for k, v in self.windows.counts.items()},
                              **{f"label_{k}": v for k, v in self.join.counts.items()}}
        if self._on_status is not None:
            self._on_status(self.status)

