"""The three retraining policies of the loop benchmark, driven in event time over one :class:`Stream`.

Every policy serves a model, scores each block of readings with it and, at the end of the block,
may act (:meth:`Policy.step`). What each one is made of:

- :class:`Static`: the initial model, never retrained.
- :class:`Schedule`: every ``every`` of event time, the real training job on the trailing
  ``policy.retrain_window`` (what ``mlops scheduler``'s job trains on); the challenger is promoted
  through the product's gate (default, as the scheduler's job does) or unconditionally.
- :class:`DriftLoop`: the product's monitor windows (:mod:`mlops.monitor.windows`) with Evidently
  drift and realised performance (:mod:`mlops.monitor.drift`), the :class:`RetrainPolicy`, the
  controller's rules (train on :func:`~mlops.monitor.controller.drift_training_window` once
  ``retrain_min_window`` of drifted data is in, evaluate on labelled data newer than the training
  window, promote through the gate, roll a worse champion back) and the real training job.

The controller itself (:class:`mlops.monitor.controller.LoopController`) waits on wall-clock
polls in a thread and promotes through the registry and Kafka; here the same rules run
synchronously on the event-time clock, so a run is fast and repeatable.

Gate evaluations read labelled data from the lake (:func:`mlops.registry.gate.lake_evaluation_data`)
once ``policy.min_evaluation_rows`` labelled readings newer than the challenger's training data
have been published. A training is assumed to finish before that (its wall time is reported; the
labels take tens of minutes of event time to arrive).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psutil
from loop_stream import LakeFeed, Stream

from mlops.config import Settings
from mlops.data.schemas import Label, Reading
from mlops.errors import MlopsError, PolicyError
from mlops.monitor import drift
from mlops.monitor.controller import drift_training_window, drifted_data_ready
from mlops.monitor.policy import RetrainPolicy, WindowSignal
from mlops.monitor.windows import ClosedWindow, LabelJoin, PerformanceWindows, Prediction, WindowBuilder
from mlops.registry.gate import GateDecision, evaluate_gate, lake_evaluation_data
from mlops.registry.loader import LoadedModel, load_version
from mlops.train.job import TrainRequest, TrainResult, Trigger, parse_duration, run_training

Report = Callable[[str], None]


class TreeCpu:
    """CPU seconds of this process and its descendants (Spark's JVM, its Python workers) while in the block,
    and the highest resident memory of this process seen meanwhile (``peak_rss``, bytes).

    Spark's Python workers may exit without their parent collecting their CPU time, so the tree is
    sampled every ``interval_s`` and each process counts with the last CPU time seen for it.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.seconds = 0.0
        self.peak_rss = 0
        self._start: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self) -> dict[tuple[int, float], float]:
        me = psutil.Process()
        self.peak_rss = max(self.peak_rss, me.memory_info().rss)
        seen = {}
        for process in [me, *me.children(recursive=True)]:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    seen[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:  # ended between listing and asking
                continue
        return seen

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._last.update(self._sample())

    def __enter__(self) -> TreeCpu:
        self._start = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._sample())
        self.seconds = sum(cpu - self._start.get(key, 0.0) for key, cpu in self._last.items())


def spark_alive(spark: Any) -> bool:
    try:
        spark.range(1).count()
    except Exception:  # Py4J errors of every kind: the JVM or its gateway is gone
        return False
    return True


@dataclass
class Training:
    """One retraining of one policy and what came of it."""

    policy: str
    trigger: str
    reason: str
    started: datetime
    """Event time at which the job ran."""
    since: datetime
    until: datetime
    wall_s: float
    cpu_s: float
    peak_rss_gb: float = 0.0
    """Highest resident memory of the benchmark process during the training job."""
    rss_after_gb: float = 0.0
    """Its resident memory once the job and the model's load are done."""
    version: str | None = None
    val_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    gate: GateDecision | None = None
    decided: datetime | None = None
    promoted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "trigger": self.trigger, "reason": self.reason,
                "started": self.started.isoformat(), "since": self.since.isoformat(),
                "until": self.until.isoformat(), "wall_s": round(self.wall_s, 2), "cpu_s": round(self.cpu_s, 2),
                "peak_rss_gb": round(self.peak_rss_gb, 2), "rss_after_gb": round(self.rss_after_gb, 2),
                "version": self.version, "val_metrics": self.val_metrics, "error": self.error,
                "gate": self.gate.summary() if self.gate else None,
                "decided": self.decided.isoformat() if self.decided else None, "promoted": self.promoted}


class Trainer:
    """The real training job on a warm Spark session, with its wall and CPU time measured."""

    def __init__(self, settings: Settings, lake: LakeFeed, spark: Any, report: Report) -> None:
        self.settings = settings
        self.lake = lake
        self.spark = spark
        self.report = report
        self._models: dict[str, LoadedModel] = {}

    def train(self, policy: str, trigger: Trigger, reason: str, since: datetime, until: datetime,
              clock: datetime, reference_since: datetime | None = None) -> tuple[Training, LoadedModel | None]:
        self.lake.flush()
        result: TrainResult | None = None
        error = None
        wall = time.perf_counter()
        with TreeCpu() as cpu:
            try:
                request = TrainRequest(since=since, until=until, trigger=trigger,
                                       reason=f"bench policy={policy}: {reason}", reference_since=reference_since)
                result = run_training(self.settings, request, spark=self.spark)
            except MlopsError as err:
                error = str(err).splitlines()[0]
        if error is not None and not spark_alive(self.spark):
            raise SystemExit(f"Spark's JVM is gone (killed, out of memory?) during a {policy} training: the "
                             "policies would be compared on failures of the machine, not their own; run again")
        training = Training(policy, trigger, reason, clock, since, until, time.perf_counter() - wall, cpu.seconds,
                            peak_rss_gb=cpu.peak_rss / 1e9, error=error)
        if result is None:
            training.rss_after_gb = psutil.Process().memory_info().rss / 1e9
            self.report(f"  [{policy}] training on {since:%d %H:%M}..{until:%d %H:%M} failed: {error} "
                        f"(rss peak {training.peak_rss_gb:.1f}GB)")
            return training, None
        training.version, training.val_metrics = result.version, dict(result.metrics)
        model = self.model(result.version)
        training.rss_after_gb = psutil.Process().memory_info().rss / 1e9
        self.report(f"  [{policy}] trained v{result.version} on {since:%d %H:%M}..{until:%d %H:%M} in "
                    f"{training.wall_s:.0f}s wall / {training.cpu_s:.0f}s CPU (val f1 {result.metrics['f1']:.3f}; "
                    f"rss peak {training.peak_rss_gb:.1f}GB, after {training.rss_after_gb:.1f}GB)")
        return training, model

    def model(self, version: str) -> LoadedModel:
        if version not in self._models:
            self._models[version] = load_version(self.settings, version)
        return self._models[version]


@dataclass
class Serving:
    """A model that served from reading ``first`` on."""

    first: int
    version: str
    since: datetime


@dataclass
class Candidate:
    """A trained challenger waiting for fresh labelled data to be judged on."""

    model: LoadedModel
    training: Training
    next_poll: datetime


class Policy:
    """A champion, the predictions it made, and the trainings it spent."""

    name = "policy"

    def __init__(self, stream: Stream, trainer: Trainer, initial: LoadedModel, report: Report) -> None:
        self.stream = stream
        self.trainer = trainer
        self.settings = trainer.settings
        self.report = report
        self.champion = initial
        n = len(stream.readings)
        self.probability = np.full(n, np.nan)
        self.decision = np.full(n, -1, dtype=np.int64)
        self.served = [Serving(stream.history_readings, initial.version, stream.time_of(stream.history_readings))]
        self.trainings: list[Training] = []
        self.candidate: Candidate | None = None
        self.monitor_cpu_s = 0.0
        self._next_reading = stream.history_readings
        self._scored_version = initial.version

    # --- scoring ----------------------------------------------------------------------------
    def score(self, rows: range) -> None:
        names = self.champion.spec.feature_names()
        x = self.stream.features.iloc[rows.start:rows.stop][names].to_numpy(dtype=np.float64)
        probability = self.champion.predict_proba(x)
        self.probability[rows.start:rows.stop] = probability
        self.decision[rows.start:rows.stop] = (probability >= self.champion.threshold).astype(np.int64)
        self._next_reading = rows.stop
        self._scored_version = self.champion.version

    def observe(self, events: range) -> None:
        """See the block's events in publish order (only the drift loop watches them)."""

    def step(self, clock: datetime) -> None:
        """Act at the end of a block whose newest reading is at event time ``clock``."""

    # --- training, gate, promotion ----------------------------------------------------------
    def train(self, trigger: Trigger, reason: str, since: datetime, until: datetime, clock: datetime,
              reference_since: datetime | None = None) -> None:
        training, model = self.trainer.train(self.name, trigger, reason, since, until, clock, reference_since)
        self.trainings.append(training)
        if model is None:
            self.finished()
            return
        self.candidate = Candidate(model, training, clock)

    def judge_candidate(self, clock: datetime, use_gate: bool = True) -> None:
        """Gate the waiting challenger once enough labelled data newer than its training window is in."""
        candidate = self.candidate
        if candidate is None or clock < candidate.next_poll:
            return
        training = candidate.training
        if not use_gate:
            self.promote(candidate.model, clock, "promoted without a gate")
            return
        policy = self.settings.policy
        data = self.evaluation_data(candidate, clock)
        if data is None:
            return
        gate = evaluate_gate(policy, candidate.model, self.champion, data)
        training.gate, training.decided = gate, clock
        if gate.promote:
            self.promote(candidate.model, clock, gate.summary())
        else:
            self.report(f"  [{self.name}] {clock:%d %H:%M} v{candidate.model.version} rejected: {gate.summary()}")
            self.candidate = None
            self.finished()

    def evaluation_data(self, candidate: Candidate, clock: datetime) -> pd.DataFrame | None:
        """Labelled lake data after the training window, or None (and a later poll) while there is too little."""
        policy = self.settings.policy
        candidate.next_poll = clock + EVALUATION_POLL
        self.trainer.lake.flush()
        try:
            data = lake_evaluation_data(self.settings, [candidate.model, self.champion], candidate.training.until)
        except PolicyError:
            return None  # labels are late: nothing labelled after the window yet
        if len(data) < policy.min_evaluation_rows or data["label"].nunique() < 2:
            return None
        return data

    def promote(self, model: LoadedModel, clock: datetime, why: str) -> None:
        assert self.candidate is not None
        previous = self.champion
        self.candidate.training.promoted, self.candidate.training.decided = True, clock
        self.champion = model
        self.served.append(Serving(self._next_reading, model.version, clock))
        self.report(f"  [{self.name}] {clock:%d %H:%M} v{model.version} replaces v{previous.version}: {why}")
        self.candidate = None
        self.promoted(previous)
        self.finished()

    def promoted(self, previous: LoadedModel) -> None:
        """Hook: a new champion serves from the next block on."""

    def finished(self) -> None:
        """Hook: a retraining has been decided on (promoted, rejected or failed)."""

    def roll_back(self, to: LoadedModel, clock: datetime, why: str) -> None:
        self.champion = to
        self.served.append(Serving(self._next_reading, to.version, clock))
        self.report(f"  [{self.name}] {clock:%d %H:%M} rolled back to v{to.version}: {why}")


EVALUATION_POLL = timedelta(minutes=15)
"""How often (event time) a waiting challenger checks the lake for fresh labelled data."""


class Static(Policy):
    name = "static"


class Schedule(Policy):
    """Retrain every ``every`` of event time, like ``mlops scheduler`` with a fixed cron."""

    name = "schedule"

    def __init__(self, stream: Stream, trainer: Trainer, initial: LoadedModel, report: Report,
                 every: timedelta, use_gate: bool) -> None:
        super().__init__(stream, trainer, initial, report)
        self.every = every
        self.use_gate = use_gate
        self.next_due = stream.time_of(stream.history_readings) + every
        self.window = parse_duration(self.settings.policy.retrain_window)

    def step(self, clock: datetime) -> None:
        self.judge_candidate(clock, self.use_gate)
        if clock < self.next_due:
            return
        while self.next_due <= clock:  # coalesce: a missed run fires once
            self.next_due += self.every
        if self.candidate is not None:
            self.report(f"  [{self.name}] {clock:%d %H:%M} skipped: the previous challenger is still being judged")
            return
        until = clock + timedelta(seconds=1)
        self.train("schedule", f"every {self.every}", until - self.window, until, clock)


@dataclass
class Probation:
    """A champion the loop just promoted, watched against the one it replaced."""

    previous: LoadedModel
    windows_left: int
    worse_windows: int = 0


class DriftLoop(Policy):
    """The product's closed loop: monitor windows -> RetrainPolicy -> training -> gate -> promotion."""

    name = "drift loop"

    def __init__(self, stream: Stream, trainer: Trainer, initial: LoadedModel, report: Report,
                 baseline_metric: float | None) -> None:
        super().__init__(stream, trainer, initial, report)
        s = self.settings
        policy, features = s.policy, s.features
        self.windows = WindowBuilder(policy.window_mode, policy.window_size, policy.window_seconds,
                                     s.monitor.window_grace_s, s.monitor.min_window)
        self.join = LabelJoin(features.horizon_cycles, features.cycle_seconds, policy.label_lateness_s,
                              s.monitor.max_pending_per_device)
        self.performance = PerformanceWindows(policy.window_size)
        self.policy = RetrainPolicy(policy)
        self.baseline_metric = baseline_metric
        self.drift_started: datetime | None = None
        self.waiting_since: datetime | None = None
        """Drift start of a triggered retraining that waits for ``retrain_min_window`` of drifted data."""
        self.probation: Probation | None = None
        self.window_log: list[dict[str, Any]] = []
        self._references: dict[str, pd.DataFrame] = {}
        self._matrices: dict[tuple[str, ...], np.ndarray] = {}

    # --- the monitor ------------------------------------------------------------------------
    def observe(self, events: range) -> None:
        stream = self.stream
        names = self.champion.spec.feature_names()
        matrix = self._matrix(names)
        for i in events:
            event = stream.events[i]
            closed: list[ClosedWindow] = []
            if isinstance(event, Label):
                closed += self._performance(self.join.add_label(event))
            else:
                row = int(stream.reading_of_event[i])
                closed += self._predict(event, row, dict(zip(names, matrix[row].tolist(), strict=True)))
            for window in closed:
                self.on_window(window)

    def _matrix(self, names: list[str]) -> np.ndarray:
        key = tuple(names)
        if key not in self._matrices:
            self._matrices[key] = self.stream.features[names].to_numpy(dtype=np.float64)
        return self._matrices[key]

    def _predict(self, reading: Reading, row: int, features: dict[str, float]) -> list[ClosedWindow]:
        # The scorer stamps each prediction with the version that made it and the features it used.
        prediction = Prediction(reading.device_id, reading.event_time, float(self.probability[row]),
                                int(self.decision[row]), self.champion.name, self._scored_version, features)
        closed = self.windows.add(prediction)
        return closed + self._performance(self.join.add_prediction(prediction))

    def _performance(self, judged: list[Any]) -> list[ClosedWindow]:
        return [w for w in (self.performance.add(j) for j in judged) if w is not None]

    def on_window(self, window: ClosedWindow) -> None:
        """What the monitor and the controller do with one closed window."""
        cpu = time.process_time()
        signal = self._signal(window)
        self.monitor_cpu_s += time.process_time() - cpu
        clock = window.end_time
        if window.model_version != self.champion.version:
            return  # a replaced model's window says nothing about the champion (the controller's rule)
        if self.policy.why_bad(signal) is not None and not self.policy.streaks.get(signal.stream):
            self.drift_started = window.start_time
        decision = self.policy.observe(signal, clock)
        self.window_log.append({"kind": window.kind, "version": window.model_version,
                                "start": window.start_time.isoformat(), "end": window.end_time.isoformat(),
                                "drift_share": signal.drift_share, "metric": signal.metric,
                                "trigger": decision.trigger, "reason": decision.reason})
        if decision.bad_streak or decision.trigger:
            self.report(f"  [{self.name}] {clock:%d %H:%M} {window.kind} window v{window.model_version}: "
                        f"{decision.reason}"[:200])
        if decision.trigger:
            self.policy.retraining_started(clock)
            self.waiting_since = self.drift_started or clock

    def _signal(self, window: ClosedWindow) -> WindowSignal:
        frame = pd.DataFrame.from_records([p.features for p in window.predictions])
        probability = [p.probability for p in window.predictions]
        decisions = [p.decision for p in window.predictions]
        window_id = f"{window.kind}-{window.model_version}-{window.end_time:%d%H%M}"
        if window.kind == "performance":
            assert window.labels is not None
            metrics, _ = drift.performance(window.labels, probability, decisions)
            metric = metrics.get(self.settings.policy.primary_metric)
            self._judge_probation(window, frame, metric)
            return WindowSignal(window_id, metric=metric,
                                baseline_metric=self.baseline_metric if metric is not None else None)
        reference = self._reference(window.model_version)
        frame["probability"] = probability
        features = [c for c in frame.columns if c != "probability"]
        outcome = drift.data_drift(frame, reference, features, self.settings.policy.drift_threshold,
                                   reference.get("probability"), self.settings.policy.feature_drift_threshold)
        return WindowSignal(window_id, drift_share=outcome.drift_share)

    def _reference(self, version: str) -> pd.DataFrame:
        if version not in self._references:
            self._references[version] = drift.load_reference(self.settings, self.champion.name, version)
        return self._references[version]

    # --- the controller ---------------------------------------------------------------------
    def step(self, clock: datetime) -> None:
        self.judge_candidate(clock)
        if self.waiting_since is None:
            return
        policy = self.settings.policy
        if not drifted_data_ready(policy, self.waiting_since, clock):
            return  # training now would see mostly pre-drift data
        drift_started = self.waiting_since
        since, until = drift_training_window(policy, drift_started, clock + timedelta(seconds=1))
        self.waiting_since = None
        self.train("drift", "drift or performance windows (RetrainPolicy)", since, until, clock, drift_started)

    def finished(self) -> None:
        self.policy.retraining_finished()

    def promoted(self, previous: LoadedModel) -> None:
        self.policy.streaks.clear()  # the old model's bad windows say nothing about the new one
        self.probation = Probation(previous, self.settings.policy.probation_windows)
        training = self.trainings[-1]
        self.baseline_metric = training.val_metrics.get(self.settings.policy.primary_metric)

    def _judge_probation(self, window: ClosedWindow, frame: pd.DataFrame, metric: float | None) -> None:
        """The controller's rollback: the new champion against the one it replaced, on the same events."""
        probation = self.probation
        if probation is None or metric is None or window.model_version != self.champion.version:
            return
        previous = probation.previous
        probability = previous.predict_proba(frame.reindex(columns=previous.spec.feature_names())
                                             .to_numpy(dtype=np.float64))
        assert window.labels is not None
        old, _ = drift.performance(window.labels, probability.tolist(),
                                   (probability >= previous.threshold).astype(int).tolist())
        primary = self.settings.policy.primary_metric
        if primary in old and metric < old[primary] - self.settings.policy.guard_tolerance:
            probation.worse_windows += 1
        probation.windows_left -= 1
        if probation.worse_windows >= self.settings.policy.consecutive_windows:
            self.probation = None
            self.policy.streaks.clear()
            self.roll_back(previous, window.end_time, f"worse than v{previous.version} in "
                                                      f"{probation.worse_windows} windows")
        elif probation.windows_left <= 0:
            self.probation = None
