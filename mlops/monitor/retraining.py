"""The one retrain -> gate -> promote use case, for every driver of the loop.

The loop controller (:mod:`mlops.monitor.controller`), the scheduler's job
(:mod:`mlops.monitor.jobs`), the demo's initial model (:mod:`mlops.demo.run`) and the loop
benchmark all train and promote through these functions, so a retraining is recorded, gated and
promoted the same way whoever started it:

- :func:`train_challenger`: the real training job, with ``retrain_started`` / ``retrain_finished``
  / ``retrain_failed`` in the audit trail;
- :func:`gate_and_promote`: the evaluation gate against the current champion and the promotion
  (:func:`mlops.registry.promotion.promote`: alias move, model event, audit row), or the recorded
  rejection, as a :class:`Verdict`;
- :func:`retrain_gate_promote`: both, for a caller that can wait for its evaluation data.

Whether and when to retrain, and when the gate may decide, is not decided here but in
:class:`mlops.monitor.loop.LoopCore` (or by a schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops import store
from mlops.config import Settings
from mlops.errors import MlopsError
from mlops.log import get_logger

if TYPE_CHECKING:
    import pandas as pd

    from mlops.evaluation.gate import GateDecision
    from mlops.train.job import TrainRequest, TrainResult

__all__ = ["TrainFunction", "Verdict", "gate_and_promote", "retrain_gate_promote", "train_challenger"]

log = get_logger(__name__)
TrainFunction = Callable[[Settings, "TrainRequest"], "TrainResult"]


@dataclass(frozen=True)
class Verdict:
    """What the gate decided for one challenger."""

    promoted: bool
    version: str
    previous_version: str | None
    reason: str
    decision: GateDecision | None = None


def train_challenger(settings: Settings, request: TrainRequest, *, actor: str, train: TrainFunction | None = None,
                     spark: Any = None, progress: Callable[[str], None] | None = None,
                     details: dict[str, Any] | None = None) -> TrainResult:
    """Run the training job on ``request`` and record it; a failure is recorded and re-raised."""
    from mlops.train.job import run_training  # heavy

    name = settings.mlflow.registered_model
    window = {"since": request.since.isoformat() if request.since else None,
              "until": request.until.isoformat() if request.until else None, "window": request.window}
    store.record_event(settings, "retrain_started", model_name=name, actor=actor, reason=request.reason,
                    details={**window, "trigger": request.trigger, **(details or {})})
    try:
        if train is not None:
            result = train(settings, request)
        else:
            result = run_training(settings, request, spark=spark, progress=progress or (lambda _line: None))
    except (MlopsError, OSError) as err:
        store.record_event(settings, "retrain_failed", model_name=name, actor=actor,
                        reason=(str(err).splitlines() or [type(err).__name__])[0][:500],
                        details={**window, **(details or {})})
        raise
    store.record_event(settings, "retrain_finished", model_name=name, model_version=result.version,
                    run_id=result.run_id, actor=actor, reason=request.reason,
                    details={"metrics": result.metrics, "params": result.params, "duration_s": result.duration_s})
    return result


def gate_and_promote(settings: Settings, version: str, *, actor: str, reason: str,
                     evaluation_data: pd.DataFrame | None = None, force: bool = False) -> Verdict:
    """Promote ``version`` if it beats the champion on ``evaluation_data`` (default: labelled lake data
    newer than both models' training data); a loss or a gate that cannot decide is recorded, not raised."""
    from mlops.registry import promotion  # heavy

    try:
        change = promotion.promote(settings, version, actor=actor, reason=reason, force=force,
                                   evaluation_data=evaluation_data)
    except promotion.PromotionRejectedError as err:
        log.info("challenger rejected", model_version=version, reason=str(err).splitlines()[0])
        decision = err.decision
        return Verdict(False, version, decision.champion_version if decision else None, str(err), decision)
    except MlopsError as err:  # the gate could not decide (no data, registry down): recorded by promote
        log.warning("challenger not evaluated", model_version=version, error=str(err).splitlines()[0])
        return Verdict(False, version, None, str(err))
    summary = change.decision.summary() if change.decision else ("forced" if force else "already champion")
    return Verdict(True, change.version, change.previous_version, summary, change.decision)


def retrain_gate_promote(settings: Settings, request: TrainRequest, *, actor: str,
                         evaluation_data: Callable[[TrainResult], pd.DataFrame | None] | None = None,
                         force: bool = False, train: TrainFunction | None = None, spark: Any = None,
                         progress: Callable[[str], None] | None = None) -> Verdict | None:
    """Train, then gate and promote; None when the training failed (recorded)."""
    try:
        result = train_challenger(settings, request, actor=actor, train=train, spark=spark, progress=progress)
    except (MlopsError, OSError) as err:
        log.error("retraining failed", actor=actor, reason=str(err).splitlines()[0] if str(err) else repr(err))
        return None
    data = evaluation_data(result) if evaluation_data is not None else None
    return gate_and_promote(settings, result.version, actor=actor, reason=request.reason or request.trigger,
                            evaluation_data=data, force=force)
