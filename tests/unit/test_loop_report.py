"""The loop report links every window's Evidently report and shows the versions' realised metrics side by side."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops import store
from mlops.config import Settings, load_settings
from mlops.demo.report import write_report
from mlops.demo.run import RunOutcome
from mlops.demo.window_tables import REALISED_COLUMNS
from mlops.evaluation.names import REALISED_METRIC_NAMES
from mlops.monitor.reports import save_report
from mlops.store.results import WindowResult, engine_for
from mlops.testing import free_port

START = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def _settings(tmp_path: Path) -> Settings:
    # Nobody listens on the MLflow port: the report says the registry is unavailable and goes on.
    return load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path / "data")},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}", "registered_model": "m"},
    })


class _Snapshot:
    """What :func:`save_report` needs of an Evidently snapshot."""

    def save_html(self, path: str) -> None:
        Path(path).write_text("<html>evidently</html>")

    def json(self) -> str:
        return "{}"


def _window(kind: str, version: str, hour: int, metrics: dict[str, float] | None = None) -> WindowResult:
    extra = ({"drift_share": 0.1, "drift_score": 2.0, "drift_threshold": 4.0, "drifted": False} if kind == "drift"
             else {"metrics": metrics})
    return WindowResult(kind=kind, model_name="m", model_version=version,  # type: ignore[arg-type]
                        start_time=START + timedelta(hours=hour), end_time=START + timedelta(hours=hour + 1),
                        n_predictions=300, source_offsets={}, **extra)  # type: ignore[arg-type]


def _fill(settings: Settings) -> dict[int, str | None]:
    """Windows of v1, then v2 promoted over v1 (both scored); returns window id -> its report file."""
    engine = engine_for(settings)
    perf_v1 = {"f1": 0.81, "precision": 0.78, "recall": 0.84, "n_labelled": 300.0}
    perf_v2 = {"f1": 0.66, "precision": 0.61, "recall": 0.72, "n_labelled": 280.0,
               "previous_f1": 0.35, "previous_precision": 0.30, "previous_recall": 0.42}
    reports: dict[int, str | None] = {}
    for window, with_report in ((_window("drift", "1", 0), True), (_window("performance", "1", 0, perf_v1), True),
                                (_window("drift", "2", 1), False), (_window("performance", "2", 1, perf_v2), True)):
        saved = store.results.save(engine, window)
        assert saved.window_id is not None
        reports[saved.window_id] = None
        if with_report:
            html_path, json_path = save_report(_Snapshot(), settings.reports_dir, saved.window_id)
            store.results.set_reports(engine, saved.window_id, str(html_path), str(json_path))
            reports[saved.window_id] = str(html_path)
    store.record_event(settings, "trigger", model_name="m", model_version="1", reason="drift")
    store.record_event(settings, "promotion", model_name="m", model_version="2", previous_version="1", actor="loop")
    return reports


def _rows(page: str, heading: str) -> list[str]:
    table = page.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", table)


def _cells(row: str) -> list[str]:
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)


def test_the_report_links_each_windows_evidently_report_and_puts_the_versions_side_by_side(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the stopped registry fails at once
    settings = _settings(tmp_path)
    reports = _fill(settings)

    index = write_report(settings, RunOutcome(scenario="recalibration", onset_time=START + timedelta(hours=1),
                                              initial_version="1", promoted_versions=["2"], serving_version="2"))

    page = index.read_text()
    windows = {int(_cells(row)[0]): row for row in _rows(page, "Monitor windows and their Evidently reports")[1:]}
    assert set(windows) == set(reports)
    for window_id, report in reports.items():
        if report is None:
            assert _cells(windows[window_id])[-1] == "no report"
            continue
        href = re.search(r'href="([^"]+)"', windows[window_id])
        assert href is not None and href.group(1) == os.path.relpath(report, index.parent)
        assert (index.parent / href.group(1)).read_text() == "<html>evidently</html>"  # opens from disk

    head_versions, head_metrics, *rows = _rows(page, "Realised metrics per model version")
    assert _cells(head_versions)[4:] == ["v1", "v2"]
    assert _cells(head_metrics) == [*REALISED_COLUMNS] * 2
    by_window = {_cells(row)[3]: _cells(row)[4:] for row in rows}
    assert by_window == {"v1": ["0.810", "0.780", "0.840", "", "", ""],  # only the served version before a promotion
                         "v2": ["0.350", "0.300", "0.420", "0.660", "0.610", "0.720"]}  # v1 on v2's events
    assert "model registry unavailable" in page


def test_the_side_by_side_columns_are_metrics_the_monitor_computes() -> None:
    assert set(REALISED_COLUMNS) <= set(REALISED_METRIC_NAMES)
