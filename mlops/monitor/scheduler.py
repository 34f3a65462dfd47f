"""``mlops scheduler``: scheduled retraining with APScheduler on the project's database.

Jobs live in APScheduler's SQLAlchemy job store in the project's database (SQLite by default,
PostgreSQL in production), so a restart neither loses a run nor runs one twice:

- every job has ``coalesce=True`` (missed runs collapse into one), ``max_instances=1`` and an
  explicit ``misfire_grace_time``: a run missed while the scheduler was down fires once on restart;
- jobs already in the store are kept as they are (with their next run time) unless their trigger
  changed in configuration, so a restart does not push a missed run into the future;
- only the holder of the ``scheduler`` lease (:mod:`mlops.store.lease`) runs jobs; a second
  instance waits as a standby and takes over when the leader's lease expires.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from mlops import store
from mlops.config import Settings
from mlops.errors import ConfigError
from mlops.log import get_logger
from mlops.store.lease import Lease

__all__ = ["RETRAIN_FUNC", "RETRAIN_JOB_ID", "build_scheduler", "ensure_job", "holder_id", "retrain_trigger",
           "run_scheduler"]

log = get_logger(__name__)
RETRAIN_JOB_ID = "scheduled-retrain"
RETRAIN_FUNC = "mlops.monitor.jobs:scheduled_retrain"


def build_scheduler(settings: Settings) -> BackgroundScheduler:
    """A scheduler whose jobs persist in the project's database; not started."""
    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=settings.database_url, tablename="apscheduler_jobs")},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.scheduler.misfire_grace_s,
        },
        timezone="UTC",
    )


def retrain_trigger(settings: Settings) -> CronTrigger | None:
    cron = settings.policy.schedule_cron
    if not cron:
        return None
    try:
        return CronTrigger.from_crontab(cron, timezone="UTC")
    except ValueError as err:
        raise ConfigError(f"key 'policy.schedule_cron': {cron!r} is not a cron expression: {err}") from err


def ensure_job(scheduler: BackgroundScheduler, job_id: str, func: str, trigger: BaseTrigger | None,
               kwargs: dict[str, Any]) -> str:
    """Make the stored job match configuration without disturbing an unchanged one.

    Returns what happened: "added", "replaced", "kept", "removed" or "absent".
    """
    existing = scheduler.get_job(job_id)
    if trigger is None:
        if existing is None:
            return "absent"
        existing.remove()
        return "removed"
    if existing is not None and str(existing.trigger) == str(trigger) and existing.kwargs == kwargs:
        return "kept"  # keeps its stored next run time: a run missed while down still fires
    scheduler.add_job(func, trigger=trigger, id=job_id, kwargs=kwargs, replace_existing=True)
    return "replaced" if existing is not None else "added"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_scheduler(settings: Settings, stop: threading.Event,
                  report: Callable[[str], None] = print,
                  extra_jobs: Callable[[BackgroundScheduler], None] | None = None,
                  holder: str | None = None) -> None:
    """Run as leader while holding the lease, as standby otherwise, until ``stop`` is set."""
    engine = store.get_engine(settings)  # shared per process: SQLite busy timeout, schema ensured
    lease = Lease(engine, "scheduler", holder or holder_id(), ttl_s=settings.scheduler.lease_ttl_s)
    scheduler: BackgroundScheduler | None = None
    renew_every = settings.scheduler.lease_ttl_s / 3
    try:
        while not stop.is_set():
            leader = lease.try_acquire()
            if leader and scheduler is None:
                scheduler = build_scheduler(settings)
                scheduler.start(paused=True)
                outcome = ensure_job(scheduler, RETRAIN_JOB_ID, RETRAIN_FUNC, retrain_trigger(settings),
                                     {"profile": settings.profile})
                if extra_jobs is not None:
                    extra_jobs(scheduler)
                scheduler.resume()
                job = scheduler.get_job(RETRAIN_JOB_ID)
                report(f"scheduler: leader ({lease.holder}); retrain job {outcome}"
                       + (f", next run {job.next_run_time}" if job else " (policy.schedule_cron not set)"))
            elif not leader and scheduler is not None:
                report("scheduler: lost the lease, standing by")
                scheduler.shutdown(wait=False)
                scheduler = None
            elif not leader:
                current = lease.holder_now()
                log.info("standby", leader=current[0] if current else None)
            stop.wait(renew_every)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        lease.release()
