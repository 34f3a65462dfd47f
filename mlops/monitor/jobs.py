"""Functions the scheduler runs. APScheduler stores them by import path, so they take plain arguments."""

from __future__ import annotations

from datetime import UTC, datetime

from mlops.config import load_settings
from mlops.monitor.loop import duration
from mlops.monitor.retraining import retrain_gate_promote

__all__ = ["scheduled_retrain"]


def scheduled_retrain(profile: str) -> str | None:
    """Retrain on the configured window and promote through the evaluation gate.

    The loop's one retrain -> gate -> promote use case (:mod:`mlops.monitor.retraining`): a failed
    training or a lost gate is recorded in the audit trail and leaves the champion serving; the
    next scheduled run tries again. Returns the new champion's version, or None.
    """
    from mlops.train.dataset import window_end  # heavy
    from mlops.train.job import TrainRequest  # heavy

    settings = load_settings(profile)
    cron = settings.policy.schedule_cron
    until = window_end(settings, datetime.now(UTC))  # like `mlops train`: a replayed lake's own clock
    request = TrainRequest(since=until - duration(settings.policy.retrain_window), until=until, trigger="schedule",
                           reason=f"schedule {cron}")
    verdict = retrain_gate_promote(settings, request, actor="scheduler")
    return verdict.version if verdict is not None and verdict.promoted else None
