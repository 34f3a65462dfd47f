"""The loop controller: window results in, retraining, evaluation and promotion out.

For every window the monitor closes, the controller asks the :class:`RetrainPolicy` whether to
retrain and records the answer (``trigger`` or ``not_triggered``, with the reason) in the audit
trail. On a trigger it retrains in a background thread, so the monitor keeps consuming:

1. wait until the stream holds ``policy.retrain_min_window`` of event time since the drift began
   (the first bad window of the streak), then train on the window from there, less
   ``policy.drift_training_context`` (at most ``policy.retrain_window`` back), to the monitor's
   event-time clock, with ``--trigger drift`` and the triggering window as reason
   (:func:`drift_training_window`);
2. wait until the lake holds ``policy.min_evaluation_rows`` labelled readings *after* that window
   (data neither model was trained on) and run the evaluation gate on them;
3. promote through :func:`mlops.registry.promotion.promote` (alias move, model event, audit row) or
   record the rejection with the numbers.

A failed retraining leaves the champion serving, is recorded, and is retried with exponential
backoff up to ``policy.retrain_retries`` times. After a promotion the controller watches the new
champion's realised performance: if it does worse than the champion it replaced on the same
events (``policy.probation_windows`` performance windows), it rolls back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from mlops import db
from mlops.config import PolicySettings, Settings
from mlops.errors import MlopsError, PolicyError, TrainingError
from mlops.log import get_logger
from mlops.monitor.policy import Decision, RetrainPolicy, WindowSignal

log = get_logger(__name__)
ACTOR = "loop"


class WindowLike(Protocol):
    """The fields of a monitor window result the controller reads."""

    @property
    def window_id(self) -> Any: ...
    @property
    def kind(self) -> str: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def start_time(self) -> datetime | None: ...
    @property
    def end_time(self) -> datetime | None: ...
    @property
    def drift_share(self) -> float | None: ...
    @property
    def metrics(self) -> dict[str, float] | None: ...


@dataclass
class Probation:
    """A champion the loop just promoted, watched against the one it replaced."""

    version: str
    previous_version: str
    windows_left: int
    worse_windows: int = 0


def _duration(text: str) -> timedelta:
    from mlops.train.job import parse_duration

    return parse_duration(text)


def drift_training_window(policy: PolicySettings, drift_started: datetime | None,
                          until: datetime) -> tuple[datetime, datetime]:
    """[since, until) in event time for a retraining at ``until``: from the drift's start less
    ``drift_training_context`` (if set), at most ``retrain_window`` back; the whole window without a drift start."""
    longest = until - _duration(policy.retrain_window)
    if drift_started is None:
        return longest, until
    context = _duration(policy.drift_training_context) if policy.drift_training_context else timedelta(0)
    return max(drift_started - context, longest), until


def drifted_data_ready(policy: PolicySettings, drift_started: datetime | None, clock: datetime) -> bool:
    """True once ``retrain_min_window`` of event time has passed since the drift began."""
    return drift_started is None or clock >= drift_started + _duration(policy.retrain_min_window)


class LoopController:
    """Turns window results into decisions. Thread-safe: windows arrive on the monitor's thread."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 train: Callable[..., Any] | None = None, report: Callable[[str], None] = lambda _line: None,
                 baseline_metric: float | None = None) -> None:
        self.settings = settings
        self.policy = RetrainPolicy(settings.policy)
        self.clock = clock
        self._train = train
        self.report = report
        self.baseline_metric = baseline_metric
        self.event_clock: datetime | None = None
        self.drift_started: datetime | None = None
        self.probation: Probation | None = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._spark: Any = None
        self._warm_up: threading.Thread | None = None
        self.champion_version: str | None = None
        """The version the loop last put (or found) in place; windows of other versions are ignored."""
        self.engine = db.get_engine(settings)

    def warm_up(self) -> threading.Thread:
        """Prepare a retraining in the background: the Spark session and one training set built from the lake.

        A process's first training set costs far more than the next ones (JVM start, Spark's Python
        workers, Feast's and the training code's imports: 40-70 s instead of about 15 s on two
        cores). Building one from the newest two hours of the lake now, while the stream is still
        stationary, takes that out of the time between a drift alarm and the new model.
        """
        def start() -> None:
            from mlops.data.lake import lake_files
            from mlops.spark import spark_session
            from mlops.train.dataset import build_training_set

            try:
                spark = spark_session(self.settings)
                self._spark = spark
                import mlops.train.job  # noqa: F401  (its imports: MLflow, scikit-learn)

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

    # --- window results -------------------------------------------------------------------
    def on_window(self, result: WindowLike) -> Decision | None:
        """Record the window, feed the policy, start a retraining on a trigger."""
        with self._lock:
            if result.end_time is not None:
                self.event_clock = max(filter(None, [self.event_clock, result.end_time]))
            metric = (result.metrics or {}).get(self.settings.policy.primary_metric)
            db.record_event(self.engine, "window_result", model_name=self.settings.mlflow.registered_model,
                            model_version=result.model_version, actor=ACTOR,
                            reason=f"{result.kind} window {result.window_id}",
                            details={"window_id": str(result.window_id), "kind": result.kind,
                                     "drift_share": result.drift_share, "metrics": result.metrics or {},
                                     "start": _iso(result.start_time), "end": _iso(result.end_time)})
            if result.kind == "performance" and metric is not None:
                self._judge_probation(result, metric)
            if self.champion_version is not None and result.model_version != self.champion_version:
                # The monitor still judges predictions of a replaced model: they say nothing about
                # the champion, so they neither start nor extend a streak.
                reason = f"window of version {result.model_version}, which is no longer the champion"
                db.record_event(self.engine, "not_triggered", model_name=self.settings.mlflow.registered_model,
                                model_version=result.model_version, actor=ACTOR, reason=reason,
                                details={"window_id": str(result.window_id), "bad_streak": 0})
                return Decision(False, reason, str(result.window_id), 0)
            signal = WindowSignal(str(result.window_id), drift_share=result.drift_share, metric=metric,
                                  baseline_metric=self.baseline_metric if metric is not None else None)
            if self.policy.why_bad(signal) is not None and not self.policy.streaks.get(signal.stream):
                self.drift_started = result.start_time
            decision = self.policy.observe(signal, self.clock())
            db.record_event(self.engine, "trigger" if decision.trigger else "not_triggered",
                            model_name=self.settings.mlflow.registered_model, model_version=result.model_version,
                            actor=ACTOR, reason=decision.reason,
                            details={"window_id": str(result.window_id), "bad_streak": decision.bad_streak})
            if decision.trigger:
                self.report(f"loop: retraining triggered: {decision.reason}")
                self.policy.retraining_started(self.clock())
                self._worker = threading.Thread(target=self._retrain_safely, args=(decision, self.drift_started),
                                                name="loop-retrain", daemon=True)
                self._worker.start()
            return decision

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait for a running retraining to finish; True if none is running afterwards."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout_s)
        return worker is None or not worker.is_alive()

    # --- retraining -------------------------------------------------------------------------
    def _retrain_safely(self, decision: Decision, drift_started: datetime | None) -> None:
        policy = self.settings.policy
        try:
            for attempt in range(policy.retrain_retries + 1):
                try:
                    self.retrain_and_evaluate(decision.reason, decision.window_id, drift_started)
                    return
                except (TrainingError, MlopsError, OSError) as err:
                    db.record_event(self.engine, "retrain_failed", model_name=self.settings.mlflow.registered_model,
                                    actor=ACTOR, reason=str(err).splitlines()[0][:500],
                                    details={"attempt": attempt + 1, "window_id": decision.window_id})
                    self.report(f"loop: retraining failed (attempt {attempt + 1}): {str(err).splitlines()[0]}")
                    if attempt < policy.retrain_retries:
                        time.sleep(policy.retrain_backoff_s * 2**attempt)  # backoff between retries
        except Exception as err:  # never let a bug kill the monitor thread silently
            log.exception("retraining crashed", error=str(err))
            db.record_event(self.engine, "retrain_failed", model_name=self.settings.mlflow.registered_model,
                            actor=ACTOR, reason=f"{type(err).__name__}: {err}"[:500])
        finally:
            with self._lock:
                self.policy.retraining_finished()

    def training_window(self, drift_started: datetime | None) -> tuple[datetime, datetime]:
        """[since, until) in event time, ending at the monitor's clock (:func:`drift_training_window`)."""
        return drift_training_window(self.settings.policy, drift_started, self.event_clock or self.clock())

    def wait_for_drifted_data(self, drift_started: datetime | None) -> None:
        """Wait until ``retrain_min_window`` of event time has passed since the drift began.

        Training right at the trigger would see mostly data from before the drift; the new model
        would repeat the old one's mistakes and lose at the gate.
        """
        policy = self.settings.policy
        deadline = time.monotonic() + policy.evaluation_timeout_s
        while not drifted_data_ready(policy, drift_started, self.event_clock or self.clock()):
            if time.monotonic() > deadline:
                raise TrainingError(f"the stream did not reach drift start + policy.retrain_min_window "
                                    f"({policy.retrain_min_window}) in time")
            time.sleep(0.5)  # the monitor thread advances event_clock with every window

    def retrain_and_evaluate(self, reason: str, window_id: str, drift_started: datetime | None) -> str | None:
        """One retraining: train, wait for fresh labels, gate, promote or reject. Returns the new champion."""
        from mlops.registry import promotion
        from mlops.train.job import TrainRequest, run_training

        name = self.settings.mlflow.registered_model
        if self._warm_up is not None:  # one training set at a time in the shared Spark session and Feast repo
            self._warm_up.join(self.settings.policy.evaluation_timeout_s)
        self.wait_for_drifted_data(drift_started)
        since, until = self.training_window(drift_started)
        db.record_event(self.engine, "retrain_started", model_name=name, actor=ACTOR, reason=reason,
                        details={"window_id": window_id, "since": _iso(since), "until": _iso(until)})
        self.report(f"loop: training on {since:%Y-%m-%d %H:%M} .. {until:%Y-%m-%d %H:%M} (event time)")
        request = TrainRequest(since=since, until=until, trigger="drift", reason=f"window {window_id}: {reason}",
                               reference_since=drift_started)
        if self._train is not None:
            result = self._train(self.settings, request)
        else:
            result = run_training(self.settings, request, spark=self._spark,
                                  progress=lambda line: self.report(f"loop: train: {line}"))
        db.record_event(self.engine, "retrain_finished", model_name=name, model_version=result.version,
                        run_id=result.run_id, actor=ACTOR, reason=reason,
                        details={"metrics": result.metrics, "params": result.params,
                                 "duration_s": result.duration_s})
        self.report(f"loop: trained version {result.version} (val {self.settings.policy.primary_metric} "
                    f"{result.metrics.get(self.settings.policy.primary_metric, float('nan')):.3f})")
        data = self.wait_for_evaluation_data(result.version, until)
        try:
            change = promotion.promote(self.settings, result.version, actor=ACTOR,
                                       reason=f"drift retraining: {reason}", evaluation_data=data)
        except promotion.PromotionRejectedError as err:
            self.report(f"loop: version {result.version} rejected: {err}")
            return None
        with self._lock:
            self.champion_version = change.version
            self.policy.streaks.clear()  # the old model's bad windows say nothing about the new one
        if change.changed and change.previous_version:
            self.probation = Probation(change.version, change.previous_version,
                                       self.settings.policy.probation_windows)
            self.baseline_metric = result.metrics.get(self.settings.policy.primary_metric)
        self.report(f"loop: promoted version {change.version} (was {change.previous_version})")
        return change.version

    def wait_for_evaluation_data(self, version: str, since: datetime) -> pd.DataFrame:
        """Labelled lake data newer than ``since`` for both models, once there is enough of it."""
        from mlops.registry.gate import lake_evaluation_data
        from mlops.registry.loader import load_champion, load_version

        policy = self.settings.policy
        models = [load_version(self.settings, version)]
        # No champion yet: the gate promotes the first model on its own merits.
        with contextlib.suppress(MlopsError):
            models.append(load_champion(self.settings))
        deadline = time.monotonic() + policy.evaluation_timeout_s
        rows = 0
        while time.monotonic() < deadline:
            try:
                data = lake_evaluation_data(self.settings, models, since)
                rows = len(data)
                if rows >= policy.min_evaluation_rows and data["label"].nunique() == 2:
                    return data
            except PolicyError:
                pass  # not there yet: labels arrive late
            time.sleep(1.0)  # the lake sink writes in micro-batches; poll until the deadline
        raise TrainingError(f"evaluation of version {version}: only {rows} labelled rows after "
                            f"{since.isoformat()} within {policy.evaluation_timeout_s:.0f}s "
                            f"(need {policy.min_evaluation_rows} with both classes)")

    # --- probation --------------------------------------------------------------------------
    def _judge_probation(self, result: WindowLike, metric: float) -> None:
        probation = self.probation
        if probation is None or result.model_version != probation.version:
            return
        previous = (result.metrics or {}).get(f"previous_{self.settings.policy.primary_metric}")
        if previous is not None and metric < previous - self.settings.policy.guard_tolerance:
            probation.worse_windows += 1
        probation.windows_left -= 1
        if probation.worse_windows >= self.settings.policy.consecutive_windows:
            from mlops.registry import promotion

            reason = (f"version {probation.version} did worse than version {probation.previous_version} on the "
                      f"same events in {probation.worse_windows} windows")
            promotion.rollback(self.settings, probation.previous_version, actor=ACTOR, reason=reason)
            self.champion_version = probation.previous_version
            self.policy.streaks.clear()
            self.report(f"loop: rolled back to {probation.previous_version}: {reason}")
            self.probation = None
        elif probation.windows_left <= 0:
            self.probation = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
