"""`mlops status` with nothing running: every section is there, and says why it is empty."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from mlops import store
from mlops.cli import app
from mlops.config import Settings, load_settings
from mlops.status import gather
from mlops.store.results import WindowResult, engine_for
from mlops.testing import free_port

NOW = datetime(2026, 3, 4, 10, 20, tzinfo=UTC)


def _settings(tmp_path: Path) -> Settings:
    # Ports nobody listens on: the services are down, so status must say so without waiting on them.
    return load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}", "registered_model": "m"},
        "policy": {"schedule_cron": "0 */6 * * *"},
    })


def _window(kind: str, end: datetime, version: str = "2") -> WindowResult:
    extra = ({"drift_share": 0.2, "drift_score": 5.0, "drift_threshold": 4.0, "drifted": True} if kind == "drift"
             else {"metrics": {"f1": 0.61, "n_positives": 40.0}})
    return WindowResult(kind=kind, model_name="m", model_version=version,  # type: ignore[arg-type]
                        start_time=end - timedelta(minutes=10), end_time=end, n_predictions=500,
                        source_offsets={}, **extra)  # type: ignore[arg-type]


def test_status_names_each_service_that_is_down_and_still_shows_the_database(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    engine = engine_for(settings)
    for i in range(7):
        store.results.save(engine, _window("drift" if i % 2 else "performance", NOW + timedelta(minutes=i)))
    store.record_event(settings, "window_result", model_name="m", model_version="2")
    store.record_event(settings, "trigger", model_name="m", model_version="2", reason="drift score 5.0\nmore")
    store.record_event(settings, "promotion", model_name="m", model_version="3", previous_version="2",
                       actor="loop", reason="f1 0.70 vs 0.40")
    store.record_event(settings, "promotion", model_name="other", model_version="9")

    report = gather(settings, windows=5, decisions=5, now=lambda: NOW)

    assert {row["name"]: row["ready"] for row in report["services"]} == {"kafka": False, "mlflow": False}
    assert settings.mlflow.tracking_uri in report["champion"]["error"]
    assert settings.kafka.bootstrap_servers in report["scorer"]["error"]
    newest = report["windows"]["newest"]
    assert [w["id"] for w in newest] == [7, 6, 5, 4, 3], newest  # newest first, only as many as asked
    assert newest[0]["kind"] == "performance" and newest[0]["metrics"] == {"f1": 0.61}  # counts are not metrics
    assert newest[1]["drift_score"] == 5.0 and newest[1]["drifted"] is True
    decisions = report["decisions"]["newest"]
    assert [(d["kind"], d["version"]) for d in decisions] == [("promotion", "3"), ("trigger", "2")], decisions
    assert decisions[1]["reason"] == "drift score 5.0"
    assert report["schedule"] == {"cron": "0 */6 * * *", "next_run": "2026-03-04T12:00:00+00:00", "leader": None,
                                  "note": "no `mlops scheduler` holds the lease"}


def test_status_command_prints_json_and_fails_while_a_service_is_down(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(tmp_path)
    monkeypatch.setenv("MLOPS_PATHS__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("MLOPS_MLFLOW__TRACKING_URI", settings.mlflow.tracking_uri)
    monkeypatch.delenv("MLOPS_POLICY__SCHEDULE_CRON", raising=False)

    result = CliRunner().invoke(app, ["status", "--json"])

    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert set(report) == {"services", "champion", "scorer", "windows", "schedule", "decisions"}
    assert report["windows"] == {"newest": []} and report["decisions"] == {"newest": []}
    assert report["schedule"]["next_run"] is None

    screen = CliRunner().invoke(app, ["status"])
    assert screen.exit_code == 1
    assert "does not answer" in screen.output and "policy.schedule_cron is not set" in screen.output, screen.output
