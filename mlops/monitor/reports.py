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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.log import get_logger
from mlops.monitor.results import WindowResult

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
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
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
