"""The scheduled retraining's window ends where `mlops train`'s does: at the lake's newest event when the
lake's data is older than now (replayed or simulated history), else at now (a live fleet)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops.config import load_settings
from mlops.data import lake
from mlops.monitor import jobs
from mlops.train.dataset import window_end
from mlops.train.job import TrainRequest

HISTORY_END = datetime(2026, 1, 1, 6, 39, tzinfo=UTC)


def _lake_until(data_dir: Path, newest: datetime) -> None:
    settings = load_settings("local", overrides={"paths": {"data_dir": str(data_dir)}})
    rows = [{"device_id": "d0", "device_type": "pump-a", "event_time": newest - timedelta(minutes=2 - i),
             "cycle": i, "temperature": 70.0 + i, "_topic": "r", "_partition": 0, "_offset": i} for i in range(3)]
    lake.write_commit(settings, "readings", "r", 0, 0, 2, rows, dead_letters=0)


@pytest.fixture()
def requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[TrainRequest]:
    """The requests the scheduled job hands to the retrain -> gate -> promote use case (not run here)."""
    monkeypatch.setenv("MLOPS_PATHS__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_POLICY__RETRAIN_WINDOW", "3h")
    seen: list[TrainRequest] = []

    def record(_settings: Any, request: TrainRequest, actor: str) -> None:
        assert actor == "scheduler"
        seen.append(request)

    monkeypatch.setattr(jobs, "retrain_gate_promote", record)
    return seen


def test_a_lake_of_past_events_is_retrained_on_its_own_last_window(tmp_path: Path,
                                                                   requests: list[TrainRequest]) -> None:
    _lake_until(tmp_path, HISTORY_END)

    assert jobs.scheduled_retrain("local") is None
    (request,) = requests
    assert request.until == HISTORY_END + timedelta(seconds=1)  # just past the newest event: it is included
    assert request.since == request.until - timedelta(hours=3)
    assert request.trigger == "schedule"


def test_a_live_lake_and_an_empty_one_end_the_window_at_now(tmp_path: Path, requests: list[TrainRequest]) -> None:
    before = datetime.now(UTC)
    assert jobs.scheduled_retrain("local") is None  # empty lake: the training itself says there is no data
    _lake_until(tmp_path, datetime.now(UTC) + timedelta(hours=1))  # clock skew: an event "from the future"
    jobs.scheduled_retrain("local")

    assert len(requests) == 2
    for request in requests:
        assert request.until is not None and before <= request.until <= datetime.now(UTC)


def test_window_end_is_the_earlier_of_the_lake_end_and_now(tmp_path: Path) -> None:
    settings = load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)}})
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert window_end(settings, now) == now
    _lake_until(tmp_path, HISTORY_END)
    assert window_end(settings, now) == HISTORY_END + timedelta(seconds=1)
    assert window_end(settings, HISTORY_END) == HISTORY_END
