"""Functions the scheduler runs. APScheduler stores them by import path, so they take plain arguments."""

from __future__ import annotations

from mlops import db
from mlops.config import load_settings
from mlops.errors import MlopsError
from mlops.log import get_logger

log = get_logger(__name__)


def scheduled_retrain(profile: str) -> str | None:
    """Retrain on the configured window and promote through the evaluation gate.

    Failures are recorded in the audit trail and leave the champion serving; the next scheduled
    run tries again. Returns the new champion's version, or None.
    """
    from mlops.registry import promotion
    from mlops.train.job import TrainRequest, run_training

    settings = load_settings(profile)
    name = settings.mlflow.registered_model
    cron = settings.policy.schedule_cron
    db.record_event(settings, "retrain_started", model_name=name, actor="scheduler", reason=f"schedule {cron}")
    try:
        result = run_training(settings, TrainRequest(window=settings.policy.retrain_window, trigger="schedule",
                                                     reason=f"schedule {cron}"))
    except MlopsError as err:
        db.record_event(settings, "retrain_failed", model_name=name, actor="scheduler", reason=str(err)[:500])
        log.error("scheduled retraining failed", reason=str(err).splitlines()[0])
        return None
    db.record_event(settings, "retrain_finished", model_name=name, model_version=result.version,
                    run_id=result.run_id, actor="scheduler", details={"metrics": result.metrics})
    try:
        change = promotion.promote(settings, result.version, actor="scheduler", reason=f"schedule {cron}")
    except MlopsError as err:  # a rejection is recorded by promote itself
        log.info("scheduled challenger not promoted", model_version=result.version, reason=str(err).splitlines()[0])
        return None
    return change.version
