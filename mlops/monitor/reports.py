"""Window reports on disk and in MLflow.

Every window's Evidently snapshot is written to ``<reports_dir>/windows/<window-id>.html`` and
``.json`` (the snapshot's ``dict()``: metric values and test results).

MLflow: one top-level (not nested) run per monitor session in the experiment
``<mlflow.experiment>-monitor``, so monitoring runs do not crowd the training runs the MLflow UI
compares. Per window the run gets the report files under ``windows/<window-id>/`` and metrics with
``step = window id`` (``drift_share``, ``prediction_drift``, ``dataset_drift`` for drift windows;
``f1``, ``precision``, ``recall``, ``accuracy``, ``roc_auc``, ``positive_rate`` for performance
windows), so the UI plots them over the stream's life. Every call names the run explicitly
(``MlflowClient``): nothing depends on MLflow's global "active run", so the monitor can live in a
process that also trains.

Building a drift window's Evidently report costs about 1.5 s of CPU (Evidently renders its plots
while it runs), writing and uploading it more wall time; the window's verdict needs none of it.
:class:`ReportWriter` does this work on one background thread, in window order, so the monitor's
consumer loop and the loop controller never wait for a report; ``close`` drains what is queued.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.log import get_logger
from mlops.mlflow import tracking_client
from mlops.store import results
from mlops.store.results import WindowResult

__all__ = ["MonitorRun", "ReportWriter", "monitor_experiment", "save_report"]

log = get_logger(__name__)


def monitor_experiment(settings: Settings) -> str:
    return f"{settings.mlflow.experiment}-monitor"


def save_report(snapshot: Any, reports_dir: Path, window_id: int) -> tuple[Path, Path]:
    """Write ``windows/<window_id>.html`` and ``.json`` under ``reports_dir``; return both paths."""
    folder = reports_dir / "windows"
    folder.mkdir(parents=True, exist_ok=True)
    html, json_path = folder / f"{window_id}.html", folder / f"{window_id}.json"
    snapshot.save_html(str(html))
    json_path.write_text(snapshot.json())
    return html, json_path


@dataclass
class MonitorRun:
    """The MLflow run of one monitor session."""

    client: Any
    run_id: str
    experiment_id: str

    @classmethod
    def start(cls, settings: Settings, tags: dict[str, str] | None = None) -> MonitorRun:
        """Create the session's run (and the monitor experiment on first use)."""
        client = tracking_client(settings)
        name = monitor_experiment(settings)
        try:
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            run = client.create_run(experiment_id, run_name=f"monitor {started}",
                                    tags={"mlops.kind": "monitor", **(tags or {})})
        except Exception as err:  # MlflowException and connection errors alike
            raise ServiceError(f"mlflow {settings.mlflow.tracking_uri}: cannot start the monitor run: {err}") from err
        log.info("monitor run started", run_id=run.info.run_id, experiment=name)
        return cls(client, run.info.run_id, experiment_id)

    def log_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            self.client.log_param(self.run_id, key, value)

    def log_window(self, result: WindowResult, files: list[Path]) -> None:
        """Metrics of one window at step = window id, and its report files as artifacts."""
        assert result.window_id is not None, "save the result first: the window id is the step"
        values: dict[str, float] = {}
        if result.kind == "drift":
            values["drift_share"] = float(result.drift_share or 0.0)
            values["dataset_drift"] = float(bool(result.dataset_drift))
            if result.prediction_drift is not None:
                values["prediction_drift"] = result.prediction_drift
        else:
            values.update({k: v for k, v in (result.metrics or {}).items() if k != "n_labelled"})
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, result.window_id)
                                                    for k, v in values.items()])
        for path in files:
            self.client.log_artifact(self.run_id, str(path), f"windows/{result.window_id}")

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


@dataclass(frozen=True)
class _Job:
    result: WindowResult
    snapshot: Callable[[], Any]


class ReportWriter:
    """Saves each window's report (HTML, JSON), records the paths and logs both to MLflow, in the background."""

    def __init__(self, run: MonitorRun, reports_dir: Path, engine: Any) -> None:
        self.run = run
        self.reports_dir = reports_dir
        self.engine = engine
        self.written = 0
        self.failed = 0
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="window-reports", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    def submit(self, result: WindowResult, snapshot: Callable[[], Any]) -> None:
        """Queue a saved window (it has its id) and the function that builds its Evidently snapshot."""
        assert result.window_id is not None, "save the result first: the window id names the report"
        self._jobs.put(_Job(result, snapshot))

    def close(self, timeout_s: float = 30.0) -> int:
        """Write what is queued (up to ``timeout_s``), stop the thread; return the reports left unwritten."""
        self._jobs.put(None)
        self._thread.join(timeout_s)
        left = self._jobs.qsize()
        if left:
            log.warning("window reports not written before the monitor stopped", left=left, timeout_s=timeout_s)
        return left

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._write(job)
                self.written += 1
            except Exception as err:  # a report is evidence, not a decision: never stop the monitor for it
                self.failed += 1
                log.warning("window report not written", window_id=job.result.window_id, error=str(err))

    def _write(self, job: _Job) -> None:
        window_id = job.result.window_id
        assert window_id is not None
        html, json_path = save_report(job.snapshot(), self.reports_dir, window_id)
        results.set_reports(self.engine, window_id, str(html), str(json_path))
        self.run.log_window(replace(job.result, report_html=str(html), report_json=str(json_path)), [html, json_path])
