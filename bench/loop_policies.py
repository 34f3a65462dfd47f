"""The loop benchmark's policies, driven in event time over one :class:`Stream`.

Every policy serves a model, scores each block of readings with it and, at the end of the block,
may act (:meth:`Policy.step`). None of them holds a rule of the product's loop; they are adapters:

- :class:`Static`: the initial model, never retrained.
- :class:`Schedule`: every ``every`` of event time, the real training job on the trailing
  ``policy.retrain_window`` (what ``mlops scheduler``'s job trains on), gated like every challenger.
- :class:`ClosedLoop`: the product's loop. The monitor's windows (:mod:`mlops.monitor.windows`),
  judged by the monitor's own functions (:mod:`mlops.monitor.judge`), feed the product's decision
  core (:class:`mlops.monitor.loop.LoopCore`); this class executes its commands in event time.
- :class:`Oracle`: in hindsight, a model trained on the post-onset regime with all its labels,
  serving every post-onset reading: the best any policy could serve.

Every challenger is trained, gated and promoted through the product's use case
(:mod:`mlops.monitor.retraining`): the real Spark job, the evaluation gate on labelled lake data
newer than the challenger's training window (once :func:`mlops.monitor.loop.evaluation_ready`
says there is enough), and the registry's alias move. Each policy has its own registered model, so
each one's champion is its own. A training is assumed to finish before its gate can decide (its
wall time is reported; the labels take tens of minutes of event time to arrive).
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
from mlops.data.schemas import Label, Prediction, Reading
from mlops.errors import MlopsError, PolicyError
from mlops.evaluation.data import lake_evaluation_data
from mlops.mlflow import tracking_client
from mlops.monitor import judge
from mlops.monitor.loop import (
    EVALUATION_POLL,
    Command,
    Evaluate,
    LoopCore,
    Note,
    Retrain,
    Rollback,
    duration,
    evaluation_ready,
)
from mlops.monitor.retraining import Verdict, gate_and_promote, train_challenger
from mlops.monitor.windows import ClosedWindow, LabelJoin, PerformanceWindows, WindowBuilder
from mlops.registry.loader import LoadedModel, load_version
from mlops.train.job import TrainRequest, Trigger

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
    gate: str | None = None
    decided: datetime | None = None
    promoted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "trigger": self.trigger, "reason": self.reason,
                "started": self.started.isoformat(), "since": self.since.isoformat(),
                "until": self.until.isoformat(), "wall_s": round(self.wall_s, 2), "cpu_s": round(self.cpu_s, 2),
                "peak_rss_gb": round(self.peak_rss_gb, 2), "rss_after_gb": round(self.rss_after_gb, 2),
                "version": self.version, "val_metrics": self.val_metrics, "error": self.error, "gate": self.gate,
                "decided": self.decided.isoformat() if self.decided else None, "promoted": self.promoted}


def policy_settings(settings: Settings, policy: str) -> Settings:
    """The benchmark's settings with the policy's own registered model (its own champion alias)."""
    slug = policy.replace(" ", "-")
    mlflow = settings.mlflow.model_copy(update={"registered_model": f"{settings.mlflow.registered_model}-{slug}"})
    return settings.model_copy(update={"mlflow": mlflow})


class Trainer:
    """The real training job on a warm Spark session, with its wall and CPU time measured."""

    def __init__(self, settings: Settings, lake: LakeFeed, spark: Any, report: Report) -> None:
        self.settings = settings
        self.lake = lake
        self.spark = spark
        self.report = report
        self._models: dict[tuple[str, str], LoadedModel] = {}

    def train(self, settings: Settings, policy: str, trigger: Trigger, reason: str, since: datetime,
              until: datetime, clock: datetime, reference_since: datetime | None = None) -> Training:
        """Train a challenger for ``policy`` (registered in ``settings``' model); the record of it."""
        self.lake.flush()
        version, val_metrics, error = None, {}, None
        wall = time.perf_counter()
        with TreeCpu() as cpu:
            try:
                request = TrainRequest(since=since, until=until, trigger=trigger,
                                       reason=f"bench policy={policy}: {reason}", reference_since=reference_since)
                result = train_challenger(settings, request, actor=policy, spark=self.spark)
                version, val_metrics = result.version, dict(result.metrics)
            except MlopsError as err:
                error = str(err).splitlines()[0]
        if error is not None and not spark_alive(self.spark):
            raise SystemExit(f"Spark's JVM is gone (killed, out of memory?) during a {policy} training: the "
                             "policies would be compared on failures of the machine, not their own; run again")
        training = Training(policy, trigger, reason, clock, since, until, time.perf_counter() - wall, cpu.seconds,
                            peak_rss_gb=cpu.peak_rss / 1e9, version=version, val_metrics=val_metrics, error=error)
        training.rss_after_gb = psutil.Process().memory_info().rss / 1e9
        if version is None:
            self.report(f"  [{policy}] training on {since:%d %H:%M}..{until:%d %H:%M} failed: {error}")
        else:
            self.report(f"  [{policy}] trained v{version} on {since:%d %H:%M}..{until:%d %H:%M} in "
                        f"{training.wall_s:.0f}s wall / {training.cpu_s:.0f}s CPU (val f1 "
                        f"{val_metrics.get('f1', float('nan')):.3f}; rss peak {training.peak_rss_gb:.1f}GB)")
        return training

    def model(self, settings: Settings, version: str) -> LoadedModel:
        key = (settings.mlflow.registered_model, version)
        if key not in self._models:
            self._models[key] = load_version(settings, version)
        return self._models[key]

    def register_copy(self, settings: Settings, source: LoadedModel) -> str:
        """Register ``source`` (the initial model) under ``settings``' model as its champion; the new version."""

        client = tracking_client(settings)
        original = client.get_model_version(source.name, source.version)
        name = settings.mlflow.registered_model
        client.create_registered_model(name)
        # MLflow 3: a "models:/<model id>" source must also name that logged model.
        source_uri = str(original.source)
        model_id = source_uri.removeprefix("models:/") if source_uri.startswith("models:/m-") else None
        copy = client.create_model_version(name, source_uri, run_id=original.run_id, tags=original.tags,
                                           model_id=model_id)
        client.set_registered_model_alias(name, "champion", copy.version)
        return str(copy.version)


@dataclass
class Serving:
    """A model that served from reading ``first`` on."""

    first: int
    version: str
    since: datetime


@dataclass
class Candidate:
    """A scheduled challenger waiting for fresh labelled data to be judged on."""

    training: Training
    next_poll: datetime


class Policy:
    """A champion, the predictions it made, and the trainings it spent."""

    name = "policy"

    def __init__(self, stream: Stream, trainer: Trainer, initial: LoadedModel, report: Report) -> None:
        self.stream = stream
        self.trainer = trainer
        self.settings = policy_settings(trainer.settings, self.name)
        self.report = report
        self.champion = trainer.model(self.settings, trainer.register_copy(self.settings, initial))
        n = len(stream.readings)
        self.probability = np.full(n, np.nan)
        self.decision = np.full(n, -1, dtype=np.int64)
        self.served = [Serving(stream.history_readings, self.champion.version,
                               stream.time_of(stream.history_readings))]
        self.initial_version = self.champion.version
        self.trainings: list[Training] = []
        self.monitor_cpu_s = 0.0
        self._next_reading = stream.history_readings
        self._scored_version = self.champion.version

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
        """See the block's events in publish order (only the closed loop watches them)."""

    def step(self, clock: datetime) -> None:
        """Act at the end of a block whose newest reading is at event time ``clock``."""

    # --- the use case: train, gate, promote ---------------------------------------------------
    def train(self, trigger: Trigger, reason: str, since: datetime, until: datetime, clock: datetime,
              reference_since: datetime | None = None) -> Training:
        training = self.trainer.train(self.settings, self.name, trigger, reason, since, until, clock,
                                      reference_since)
        self.trainings.append(training)
        return training

    def evaluation_data(self, version: str, after: datetime) -> pd.DataFrame | None:
        """Labelled lake data newer than ``after`` for the challenger and the champion, once there is enough."""
        self.trainer.lake.flush()
        models = [self.trainer.model(self.settings, version), self.champion]
        try:
            data = lake_evaluation_data(self.settings, models, after)
        except PolicyError:
            return None  # labels are late: nothing labelled after the window yet
        if not evaluation_ready(self.settings.policy, len(data), int(data["label"].nunique())):
            return None
        return data

    def gate(self, training: Training, data: pd.DataFrame | None, clock: datetime, force: bool = False) -> Verdict:
        """The product's gate and promotion for ``training``'s challenger; a promoted one serves from the next block."""
        assert training.version is not None
        verdict = gate_and_promote(self.settings, training.version, actor=self.name, reason=training.reason,
                                   evaluation_data=data, force=force)
        training.decided, training.promoted = clock, verdict.promoted
        training.gate = verdict.decision.summary() if verdict.decision else verdict.reason.splitlines()[0]
        if verdict.promoted:
            self.serve(training.version, clock, f"replaces v{self.champion.version}: {training.gate}")
        else:
            self.report(f"  [{self.name}] {clock:%d %H:%M} v{training.version} rejected: {training.gate}"[:240])
        return verdict

    def serve(self, version: str, clock: datetime, why: str) -> None:
        self.champion = self.trainer.model(self.settings, version)
        self.served.append(Serving(self._next_reading, version, clock))
        self.report(f"  [{self.name}] {clock:%d %H:%M} v{version} {why}"[:240])


class Static(Policy):
    name = "static"


class Schedule(Policy):
    """Retrain every ``every`` of event time, like ``mlops scheduler`` with a fixed cron."""

    def __init__(self, stream: Stream, trainer: Trainer, initial: LoadedModel, report: Report,
                 every: timedelta, use_gate: bool) -> None:
        self.name = f"every {_hours(every)}"
        super().__init__(stream, trainer, initial, report)
        self.every = every
        self.use_gate = use_gate
        self.next_due = stream.time_of(stream.history_readings) + every
        self.window = duration(self.settings.policy.retrain_window)
        self.candidate: Candidate | None = None

    def step(self, clock: datetime) -> None:
        candidate = self.candidate
        if candidate is not None and clock >= candidate.next_poll:
            candidate.next_poll = clock + EVALUATION_POLL
            data = None if not self.use_gate else self.evaluation_data(str(candidate.training.version),
                                                                       candidate.training.until)
            if data is not None or not self.use_gate:
                self.gate(candidate.training, data, clock, force=not self.use_gate)
                self.candidate = None
        if clock < self.next_due:
            return
        while self.next_due <= clock:  # coalesce: a missed run fires once
            self.next_due += self.every
        if self.candidate is not None:
            self.report(f"  [{self.name}] {clock:%d %H:%M} skipped: the previous challenger is still being judged")
            return
        until = clock + timedelta(seconds=1)
        training = self.train("schedule", f"every {_hours(self.every)}", until - self.window, until, clock)
        if training.version is not None:
            self.candidate = Candidate(training, clock)


def _hours(every: timedelta) -> str:
    return f"{every / timedelta(hours=1):g}h"


class ClosedLoop(Policy):
    """The product's closed loop: monitor windows -> the monitor's judgement -> LoopCore -> its commands."""

    name = "loop"

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
        self.core = LoopCore(policy, champion=self.champion.version, baseline_metric=baseline_metric)
        self.window_log: list[dict[str, Any]] = []
        self._references: dict[str, judge.ModelReference] = {}
        self._replaced: dict[str, LoadedModel] = {}
        """Per version: the version it replaced (the monitor scores it on the same events, for probation)."""
        self._trainings: dict[str, Training] = {}
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
        """What ``mlops loop run`` does with one closed window: judge it, hand it to the core, act."""
        cpu = time.process_time()
        result = self._judge(window)
        self.monitor_cpu_s += time.process_time() - cpu
        commands = self.core.on_window(result)
        notes = [c for c in commands if isinstance(c, Note) and c.window_id == str(result.window_id)]
        decision = notes[0] if notes else None
        metric = (result.metrics or {}).get(self.settings.policy.primary_metric)
        self.window_log.append({"kind": window.kind, "version": window.model_version,
                                "start": window.start_time.isoformat(), "end": window.end_time.isoformat(),
                                "drift_share": result.drift_share, "drifted": getattr(result, "drifted", None),
                                "drift_score": getattr(result, "drift_score", None),
                                "drift_threshold": getattr(result, "drift_threshold", None),
                                "metric": metric, "trigger": bool(decision and decision.kind == "trigger"),
                                "reason": decision.reason if decision else None})
        if decision is not None and (decision.bad_streak or decision.kind == "trigger"):
            self.report(f"  [{self.name}] {window.end_time:%d %H:%M} {window.kind} window v{window.model_version}: "
                        f"{decision.reason}"[:200])
        self.execute(commands, window.end_time)

    def _judge(self, window: ClosedWindow) -> Any:
        window_id = f"{window.kind}-{window.model_version}-{window.end_time:%d%H%M}"
        if window.kind == "performance":
            judged = judge.judge_performance(window, self.settings.policy,
                                             previous=self._replaced.get(window.model_version))
        else:
            reference = self._reference(window.model_version)
            judged = judge.judge_drift(window, reference, self.settings.policy)
        from dataclasses import replace

        return replace(judged.result, window_id=window_id)

    def _reference(self, version: str) -> judge.ModelReference:
        if version not in self._references:
            self._references[version] = judge.load_model_reference(self.settings, self.champion.name, version)
        return self._references[version]

    # --- the core's commands, executed in event time ------------------------------------------
    def step(self, clock: datetime) -> None:
        self.execute(self.core.tick(clock), clock)

    def execute(self, commands: list[Command], clock: datetime) -> None:
        queue = list(commands)
        while queue:
            command = queue.pop(0)
            if isinstance(command, Note):
                if command.details.get("follow_up"):
                    self.window_log.append({"kind": "follow-up", "version": command.model_version,
                                            "start": clock.isoformat(), "end": clock.isoformat(),
                                            "drift_share": None, "metric": None,
                                            "trigger": command.kind == "trigger", "reason": command.reason})
                    self.report(f"  [{self.name}] {clock:%d %H:%M} {command.reason}"[:200])
            elif isinstance(command, Retrain):
                training = self.train("drift", command.reason, command.since, command.until, clock,
                                      command.drift_started)
                if training.version is None:
                    queue += self.core.retrain_failed(training.error or "training failed", clock)
                else:
                    self._trainings[training.version] = training
                    queue += self.core.retrained(training.version,
                                                 training.val_metrics.get(self.settings.policy.primary_metric), clock)
            elif isinstance(command, Evaluate):
                data = self.evaluation_data(command.version, command.after)
                if data is None:
                    continue  # the core asks again at its next poll
                previous = self.champion
                verdict = self.gate(self._trainings[command.version], data, clock)
                if verdict.promoted:
                    self._replaced[command.version] = previous
                    queue += self.core.promoted(command.version, previous.version, clock)
                else:
                    queue += self.core.rejected(command.version, verdict.reason, clock)
            elif isinstance(command, Rollback):
                from mlops.registry import promotion

                promotion.rollback(self.settings, command.to_version, actor=self.name, reason=command.reason)
                self.serve(command.to_version, clock, f"rolled back: {command.reason}")
                self.window_log.append({"kind": "rollback", "version": command.to_version, "start": clock.isoformat(),
                                        "end": clock.isoformat(), "drift_share": None, "metric": None,
                                        "trigger": False, "reason": command.reason})
                queue += self.core.rolled_back(command.to_version, clock)


class Oracle(Policy):
    """In hindsight: the initial model before the onset, then one model trained on [onset, end) with every label."""

    name = "oracle"

    def fit(self, clock: datetime) -> None:
        """Train on the whole post-onset regime (call after the stream ended) and rescore its readings."""
        onset = self.stream.onset
        if onset is None:
            return
        end = self.stream.time_of(len(self.stream.readings) - 1) + timedelta(seconds=1)
        training = self.train("manual", "hindsight oracle: the post-onset regime with all its labels",
                              onset.event_time, end, clock, onset.event_time)
        if training.version is None:
            raise SystemExit(f"the oracle did not train: {training.error}")
        training.promoted, training.decided = True, onset.event_time
        model = self.trainer.model(self.settings, training.version)
        rows = range(onset.reading, len(self.stream.readings))
        self.champion = model
        self.score(rows)
        self.served.append(Serving(onset.reading, model.version, onset.event_time))
