"""The threaded adapter of the loop behind ``mlops loop run``: window results in, Spark, MLflow and Kafka out.

Every decision is the :class:`~mlops.monitor.loop.LoopCore`'s, on the monitor's event-time clock;
this class records them and executes the core's commands with the real services:

- :class:`~mlops.monitor.loop.Note`: a row in the audit trail (``trigger``, ``not_triggered`` with
  the reason, ``evaluation``);
- :class:`~mlops.monitor.loop.Retrain`: the Spark training job
  (:func:`mlops.monitor.retraining.train_challenger`) on a worker thread, so the monitor keeps
  consuming; a failed attempt is retried after ``policy.retrain_backoff_s`` (doubling);
- :class:`~mlops.monitor.loop.Evaluate`: labelled lake data newer than the training window for
  both models; once the core says it is enough, the gate and the promotion
  (:func:`mlops.monitor.retraining.gate_and_promote`). A challenger that finds too little data within
  ``policy.evaluation_timeout_s`` of wall time is rejected;
- :class:`~mlops.monitor.loop.Rollback`: :func:`mlops.registry.promotion.rollback`.

The outcome of each goes back to the core, which may answer with more commands.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd

from mlops import store
from mlops.config import Settings
from mlops.data.lake import lake_files
from mlops.errors import MlopsError, PolicyError, TrainingError
from mlops.log import get_logger
from mlops.monitor.loop import (
    Command,
    Evaluate,
    LoopCore,
    Note,
    Retrain,
    Rollback,
    WindowLike,
    drift_training_window,
)
from mlops.monitor.policy import Decision, RetrainPolicy
from mlops.monitor.retraining import TrainFunction, Verdict, gate_and_promote, retrain_gate_promote, train_challenger
from mlops.registry.catalog import version_info
from mlops.registry.loader import load_champion, load_version, resolve_alias
from mlops.spark import spark_session

__all__ = ["ACTOR", "LoopController"]

log = get_logger(__name__)
ACTOR = "loop"


class LoopController:
    """Feeds the core from the monitor's thread; runs its heavy commands on one worker thread."""

    def __init__(self, settings: Settings, *, train: TrainFunction | None = None,
                 report: Callable[[str], None] = lambda _line: None, baseline_metric: float | None = None) -> None:
        self.settings = settings
        self.core = LoopCore(settings.policy, baseline_metric=baseline_metric)
        self._train = train
        self.report = report
        self._lock = threading.Lock()
        self._queue: queue.Queue[Command] = queue.Queue()
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._evaluating_since: dict[str, float] = {}
        self._spark: Any = None
        self._warm_up: threading.Thread | None = None
        self.engine = store.get_engine(settings)

    # --- the core's state, for the CLI and tests ----------------------------------------------
    @property
    def policy(self) -> RetrainPolicy:
        return self.core.policy

    @property
    def champion_version(self) -> str | None:
        """The version the loop last put (or found) in place; windows of other versions are ignored."""
        return self.core.champion

    @champion_version.setter
    def champion_version(self, version: str | None) -> None:
        with self._lock:
            self.core.champion = version

    @property
    def event_clock(self) -> datetime | None:
        return self.core.clock

    @event_clock.setter
    def event_clock(self, value: datetime) -> None:
        with self._lock:
            self._dispatch(self.core.tick(value))

    # --- lifecycle ----------------------------------------------------------------------------
    def warm_up(self) -> threading.Thread:
        """Prepare a retraining in the background: the Spark session and one training set built from the lake.

        A process's first training set costs far more than the next ones (JVM start, Spark's Python
        workers, Feast's and the training code's imports: 40-70 s instead of about 15 s on two
        cores). Building one from the newest two hours of the lake now, while the stream is still
        stationary, takes that out of the time between a drift alarm and the new model.
        """
        def start() -> None:
            from datetime import timedelta

            from mlops.train.dataset import build_training_set  # heavy

            try:
                spark = spark_session(self.settings)
                self._spark = spark
                import mlops.train.job  # noqa: F401  # heavy: warms MLflow and scikit-learn

                files = lake_files(self.settings, "readings")
                if files:
                    until = max(f.max_event_time for f in files)
                    build_training_set(self.settings, spark, until - timedelta(hours=2), until)
                log.info("retraining warmed up")
            except Exception as err:  # a failed warm-up only means a slower first retraining
                log.warning("warm-up failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)

        self._warm_up = threading.Thread(target=start, name="retrain-warm-up", daemon=True)
        self._warm_up.start()
        return self._warm_up

    def close(self) -> None:
        """Stop the warm Spark session (its JVM), if one was started."""
        if self._spark is not None:
            with contextlib.suppress(Exception):  # a JVM that is already gone has nothing left to stop
                self._spark.stop()
            self._spark = None

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no command is queued or running; True if the worker is idle afterwards."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # --- window results -------------------------------------------------------------------
    def on_window(self, result: WindowLike) -> Decision | None:
        """Record the window and hand it to the core; returns the core's decision on it."""
        store.record_event(self.engine, "window_result", model_name=self.settings.mlflow.registered_model,
                        model_version=result.model_version, actor=ACTOR,
                        reason=f"{result.kind} window {result.window_id}",
                        details={"window_id": str(result.window_id), "kind": result.kind,
                                 "drift_share": result.drift_share, "metrics": result.metrics or {},
                                 "drifted": getattr(result, "drifted", None),
                                 "start": _iso(result.start_time), "end": _iso(result.end_time)})
        self._follow_outside_promotion(result.model_version)
        with self._lock:
            commands = self.core.on_window(result)
            self._dispatch(commands)
        window_id = str(result.window_id)
        notes = [c for c in commands if isinstance(c, Note) and c.window_id == window_id
                 and c.kind in ("trigger", "not_triggered")]
        if not notes:
            return None
        return Decision(notes[0].kind == "trigger", notes[0].reason, window_id, notes[0].bad_streak)

    def _follow_outside_promotion(self, version: str | None) -> None:
        """A window of a version other than the loop's champion: if the registry's champion alias now
        points to it (promoted by a person or the API), the loop follows. One registry call per such
        window (the old champion's last windows after a promotion, or a version promoted by hand)."""
        if version is None or self.core.champion is None or version == self.core.champion:
            return

        try:
            if resolve_alias(self.settings) != version:
                return
            baseline = version_info(self.settings, version).metrics.get("val_" + self.settings.policy.primary_metric)
        except MlopsError as err:  # the registry is down: ask again with the next window
            log.warning("cannot read the registry's champion", error=str(err).splitlines()[0])
            return
        with self._lock:
            self._dispatch(self.core.champion_changed(version, baseline))
        self.report(f"loop: following version {version}, made the champion outside the loop")

    def promote(self, version: str, *, reason: str, force: bool = False,
                evaluation_data: pd.DataFrame | None = None) -> Verdict:
        """Promote ``version`` through the loop (gate unless ``force``); a promotion starts its probation."""
        verdict = gate_and_promote(self.settings, version, actor=ACTOR, reason=reason,
                                   evaluation_data=evaluation_data, force=force)
        with self._lock:
            if verdict.promoted:
                self._dispatch(self.core.promoted(verdict.version, verdict.previous_version))
            else:
                self._dispatch(self.core.rejected(version, verdict.reason))
        return verdict

    # --- executing commands ---------------------------------------------------------------
    def _dispatch(self, commands: list[Command]) -> None:
        """Record notes at once; queue the heavy commands for the worker (caller holds the lock)."""
        for command in commands:
            if isinstance(command, Note):
                self._record(command)
                if command.kind == "trigger":
                    self.report(f"loop: retraining triggered: {command.reason}")
                continue
            self._busy += 1
            self._queue.put(command)
        if self._busy and (self._worker is None or not self._worker.is_alive()):
            self._worker = threading.Thread(target=self._work, name="loop-worker", daemon=True)
            self._worker.start()

    def _record(self, note: Note) -> None:
        store.record_event(self.engine, note.kind, model_name=self.settings.mlflow.registered_model,
                        model_version=note.model_version, actor=ACTOR, reason=note.reason,
                        details={"window_id": note.window_id, "bad_streak": note.bad_streak, **note.details})

    def _work(self) -> None:
        while True:
            try:
                command = self._queue.get(timeout=1.0)
            except queue.Empty:
                return
            try:
                follow = self._execute(command)
            except Exception as err:  # never let a bug kill the loop silently
                log.exception("loop command crashed", command=type(command).__name__, error=str(err))
                follow = []
            with self._idle:
                self._dispatch(follow)
                self._busy -= 1
                self._idle.notify_all()

    def _execute(self, command: Command) -> list[Command]:
        if isinstance(command, Retrain):
            return self._retrain(command)
        if isinstance(command, Evaluate):
            return self._evaluate(command)
        if isinstance(command, Rollback):
            return self._rollback(command)
        return []

    def _retrain(self, command: Retrain) -> list[Command]:
        from mlops.train.job import TrainRequest  # heavy

        policy = self.settings.policy
        if command.attempt > 1:
            time.sleep(policy.retrain_backoff_s * 2 ** (command.attempt - 2))  # backoff between retries
        if self._warm_up is not None:  # one training set at a time in the shared Spark session and Feast repo
            self._warm_up.join(policy.evaluation_timeout_s)
        self.report(f"loop: training on {command.since:%Y-%m-%d %H:%M} .. {command.until:%Y-%m-%d %H:%M} "
                    f"(event time{', follow-up' if command.follow_up else ''})")
        request = TrainRequest(since=command.since, until=command.until, trigger="drift",
                               reason=f"window {command.window_id}: {command.reason}",
                               reference_since=command.drift_started)
        try:
            result = train_challenger(self.settings, request, actor=ACTOR, train=self._train, spark=self._spark,
                                      progress=lambda line: self.report(f"loop: train: {line}"),
                                      details={"window_id": command.window_id, "attempt": command.attempt})
        except (MlopsError, OSError) as err:
            first = (str(err).splitlines() or [type(err).__name__])[0]
            self.report(f"loop: retraining failed (attempt {command.attempt}): {first}")
            with self._lock:
                return self.core.retrain_failed(first)
        self.report(f"loop: trained version {result.version} (val {policy.primary_metric} "
                    f"{result.metrics.get(policy.primary_metric, float('nan')):.3f})")
        self._evaluating_since[result.version] = time.monotonic()
        with self._lock:
            return self.core.retrained(result.version, result.metrics.get(policy.primary_metric))

    def _evaluate(self, command: Evaluate) -> list[Command]:
        with self._lock:
            candidate = self.core.candidate
        if candidate is None or candidate.version != command.version:
            return []  # decided meanwhile
        data = self.evaluation_data(command.version, command.after)
        rows, classes = (len(data), int(data["label"].nunique())) if data is not None else (0, 0)
        with self._lock:
            ready = self.core.evaluation_ready(rows, classes)
        policy = self.settings.policy
        if not ready:
            waited = time.monotonic() - self._evaluating_since.get(command.version, time.monotonic())
            if waited < policy.evaluation_timeout_s:
                return []  # the core asks again at its next poll
            reason = (f"evaluation of version {command.version}: only {rows} labelled rows after "
                      f"{command.after.isoformat()} within {policy.evaluation_timeout_s:.0f}s "
                      f"(need {policy.min_evaluation_rows} with both classes)")
            store.record_event(self.engine, "rejection", model_name=self.settings.mlflow.registered_model,
                            model_version=command.version, actor=ACTOR, reason=reason)
            self.report(f"loop: {reason}")
            with self._lock:
                return self.core.rejected(command.version, reason)
        verdict = gate_and_promote(self.settings, command.version, actor=ACTOR,
                                   reason=f"drift retraining: {command.reason}", evaluation_data=data)
        with self._lock:
            if verdict.promoted:
                self.report(f"loop: promoted version {verdict.version} (was {verdict.previous_version})")
                return self.core.promoted(verdict.version, verdict.previous_version)
            self.report(f"loop: version {command.version} rejected: {verdict.reason.splitlines()[0]}")
            return self.core.rejected(command.version, verdict.reason)

    def _rollback(self, command: Rollback) -> list[Command]:
        from mlops.registry import promotion  # heavy

        try:
            promotion.rollback(self.settings, command.to_version, actor=ACTOR, reason=command.reason)
        except MlopsError as err:
            log.error("rollback failed", model_version=command.to_version, error=str(err).splitlines()[0])
            self.report(f"loop: rollback to {command.to_version} failed: {err}")
            return []
        self.report(f"loop: rolled back to {command.to_version}: {command.reason}")
        with self._lock:
            return self.core.rolled_back(command.to_version)

    # --- data for the gate ------------------------------------------------------------------
    def evaluation_data(self, version: str, since: datetime) -> pd.DataFrame | None:
        """Labelled lake data newer than ``since`` for the challenger and the champion (None: none yet)."""
        from mlops.evaluation.data import lake_evaluation_data  # heavy

        models = [load_version(self.settings, version)]
        # No champion yet: the gate promotes the first model on its own merits.
        with contextlib.suppress(MlopsError):
            models.append(load_champion(self.settings))
        try:
            return lake_evaluation_data(self.settings, models, since)
        except PolicyError:
            return None  # not there yet: labels arrive late

    def training_window(self, drift_started: datetime | None) -> tuple[datetime, datetime]:
        """[since, until) in event time, ending at the monitor's clock (:func:`drift_training_window`)."""
        if self.core.clock is None:
            raise TrainingError("the loop has no event time yet: no window was judged")
        return drift_training_window(self.settings.policy, drift_started, self.core.clock)

    def retrain_and_evaluate(self, reason: str, window_id: str, drift_started: datetime | None) -> str | None:
        """One retraining now, outside the core's schedule (tests, manual runs): train, wait for fresh
        labelled data, gate, promote or reject. Returns the new champion."""
        from mlops.train.job import TrainRequest  # heavy

        since, until = self.training_window(drift_started)
        request = TrainRequest(since=since, until=until, trigger="drift", reason=f"window {window_id}: {reason}",
                               reference_since=drift_started)
        verdict = retrain_gate_promote(self.settings, request, actor=ACTOR, train=self._train, spark=self._spark,
                                       evaluation_data=lambda result: self.wait_for_evaluation_data(result.version,
                                                                                                    until))
        if verdict is None or not verdict.promoted:
            return None
        with self._lock:
            self._dispatch(self.core.promoted(verdict.version, verdict.previous_version))
        return verdict.version

    def wait_for_evaluation_data(self, version: str, since: datetime) -> pd.DataFrame:
        """Poll the lake (wall clock) until the core accepts the labelled data newer than ``since``."""
        policy = self.settings.policy
        deadline = time.monotonic() + policy.evaluation_timeout_s
        rows = 0
        while time.monotonic() < deadline:
            data = self.evaluation_data(version, since)
            if data is not None:
                rows = len(data)
                if self.core.evaluation_ready(rows, int(data["label"].nunique())):
                    return data
            time.sleep(1.0)  # the lake sink writes in micro-batches; poll until the deadline
        raise TrainingError(f"evaluation of version {version}: only {rows} labelled rows after "
                            f"{since.isoformat()} within {policy.evaluation_timeout_s:.0f}s "
                            f"(need {policy.min_evaluation_rows} with both classes)")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
