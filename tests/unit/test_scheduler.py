from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mlops.config import load_settings
from mlops.errors import ConfigError
from mlops.monitor.scheduler import build_scheduler, ensure_job, retrain_trigger, run_scheduler

JOB = "tests.unit.scheduler_jobs:record"


def _settings(tmp_path: Path, **policy: object):  # type: ignore[no-untyped-def]
    return load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)}, "policy": policy,
                                             "scheduler": {"lease_ttl_s": 1.0, "misfire_grace_s": 60}})


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait(condition, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def test_bad_cron_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\.schedule_cron"):
        retrain_trigger(_settings(tmp_path, schedule_cron="every tuesday"))


def test_jobs_have_coalesce_single_instance_and_grace(tmp_path: Path) -> None:
    settings = _settings(tmp_path, schedule_cron="0 3 * * *")
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        assert ensure_job(scheduler, "retrain", JOB, retrain_trigger(settings), {"path": "x"}) == "added"
        job = scheduler.get_job("retrain")
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 60
        assert ensure_job(scheduler, "retrain", JOB, retrain_trigger(settings), {"path": "x"}) == "kept"
    finally:
        scheduler.shutdown(wait=False)


def test_a_run_missed_while_down_fires_exactly_once_after_restart(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    out = tmp_path / "runs.txt"
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    trigger = DateTrigger(run_date=run_at)
    first = build_scheduler(settings)
    first.start(paused=True)
    assert ensure_job(first, "once", JOB, trigger, {"path": str(out)}) == "added"
    first.shutdown(wait=False)  # down before the run time
    _wait(lambda: datetime.now(UTC) > run_at + timedelta(seconds=0.5))

    second = build_scheduler(settings)
    second.start(paused=True)
    assert ensure_job(second, "once", JOB, trigger, {"path": str(out)}) == "kept"
    second.resume()
    _wait(lambda: len(_lines(out)) >= 1)
    _wait(lambda: second.get_job("once") is None)  # a date job is removed after its one run
    second.shutdown(wait=True)
    assert len(_lines(out)) == 1


def test_two_instances_on_one_database_run_each_fire_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    out = tmp_path / "runs.txt"
    reports: list[str] = []
    stops = {name: threading.Event() for name in ("a", "b")}

    def jobs(scheduler) -> None:  # type: ignore[no-untyped-def]
        ensure_job(scheduler, "tick", JOB, IntervalTrigger(seconds=1), {"path": str(out), "tag": "tick"})

    threads = [threading.Thread(target=run_scheduler, args=(settings, stops[name]),
                                kwargs={"report": reports.append, "extra_jobs": jobs, "holder": name})
               for name in ("a", "b")]
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: len(_lines(out)) >= 3)
        leaders = [line for line in reports if "leader" in line]
        assert len(leaders) == 1, reports
        # No two runs of the 1-second job closer than half a second: nothing ran twice.
        times = sorted(datetime.fromisoformat(line.split()[1]) for line in _lines(out))
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.5, gaps
        # The leader stops: the standby takes over after the lease expires.
        leader = "a" if "(a)" in leaders[0] else "b"
        stops[leader].set()
        _wait(lambda: len([line for line in reports if "leader" in line]) == 2)
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads:
            thread.join(timeout=30)
