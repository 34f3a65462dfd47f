"""End to end: the real broker, MLflow and Spark; the loop's own processes; the issue's two checks.

- Stationary fleet for a day of event time: the loop judges every window and never retrains.
- Recalibration: the stream is stationary for several windows first (no retraining on it), then the
  sensors are recalibrated: the loop must detect it, retrain, pass the gate, promote, and the
  scorer must switch; the new model beats the old one on the same events.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from mlops import store
from mlops.config import Settings, load_settings
from mlops.demo import LoopRun, as_environment, summarise
from mlops.store.results import engine_for, list_results
from mlops.testing import free_port, unique

pytestmark = pytest.mark.integration


def loop_run(services: Settings, tmp_path: Path, scenario: str, lines: list[str], **options: Any) -> tuple[Settings,
                                                                                                          LoopRun]:
    """A LoopRun on the test session's broker and MLflow, with its own topics, model and data directory."""
    suffix = unique("e2e")
    overrides = {
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers,
                  "controller_port": services.kafka.controller_port,
                  "topics": {"readings": f"{suffix}.readings", "labels": f"{suffix}.labels",
                             "predictions": f"{suffix}.predictions", "dlq": f"{suffix}.dlq",
                             "model_events": f"{suffix}.model-events"}},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": suffix, "experiment": suffix},
        "api": {"port": free_port()},
        "scorer": {"metrics_port": 0},
    }
    settings = load_settings("local", overrides=overrides)
    from mlops import kafka

    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    run = LoopRun(settings, scenario=scenario, devices=20, seed=1, history_readings=settings.demo.history_readings,
                  report=lines.append, env=as_environment(overrides), **options)
    return settings, run


@pytest.mark.timeout(1200)
def test_a_stationary_fleet_is_judged_for_a_day_without_retraining(services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    day = 24 * 60 * 20  # readings: 20 devices, one reading a minute each
    settings, run = loop_run(services, tmp_path, "stationary", lines, rate=200, after_promotion_windows=1,
                             timeout_s=900, live_readings=day)
    outcome = run.run()

    assert outcome.onset_time is None and outcome.promoted_versions == []
    events = store.list_events(settings)
    loop_actions = [e for e in events if e.kind in ("trigger", "retrain_started")
                    or (e.kind == "promotion" and e.actor != "demo")]  # the run itself promotes the initial model
    assert not loop_actions, lines
    decisions = [e for e in events if e.kind == "not_triggered"]
    windows = list_results(engine_for(settings))
    drift = [w for w in windows if w.kind == "drift"]
    assert len(drift) >= day // settings.policy.window_size - 1, lines
    assert max(w.end_time for w in drift) - min(w.start_time for w in drift) >= timedelta(hours=20)
    assert len([w for w in windows if w.kind == "performance"]) >= 10  # realised f1 was judged too
    assert len(decisions) == len(windows)  # every window got its recorded "not triggered"
    summary = summarise(settings, None, outcome.initial_version)
    assert summary.false_alarms == 0 and summary.retrainings == 0
    assert outcome.report_path is not None and outcome.report_path.exists()


@pytest.mark.timeout(1800)
def test_drift_is_detected_retrained_promoted_and_served(services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    settings, run = loop_run(services, tmp_path, "recalibration", lines, rate=100, after_promotion_windows=2,
                             timeout_s=1200)
    outcome = run.run()

    onset = outcome.onset_time
    assert isinstance(onset, datetime)
    events = store.list_events(settings)
    # Detections: follow-up retrainings (more drifted data, no new detection) are triggers too, but
    # are issued on the clock, not by a window.
    triggers = [e for e in events if e.kind == "trigger" and not (e.details or {}).get("follow_up")]
    windows = list_results(engine_for(settings))
    # Stationary part: several drift windows before the onset, none of them triggered a retraining.
    stationary = [w for w in windows if w.kind == "drift" and w.end_time < onset]
    assert len(stationary) >= 3, lines
    first_trigger_window = min(int(e.details["window_id"]) for e in triggers)
    assert all(w.window_id is not None and w.window_id < first_trigger_window for w in stationary)
    trigger_windows = {w.window_id: w for w in windows}
    assert trigger_windows[first_trigger_window].end_time >= onset, "the loop retrained before the drift"
    # Drift part: retrained, promoted by the loop, and the scorer stamps the new version. A follow-up
    # retraining may promote again while the first new champion is judged: the last promotion serves,
    # the first is the one judged against the old model (as the summary does).
    assert outcome.promoted_versions, lines
    assert outcome.serving_version == outcome.promoted_versions[-1]
    new_windows = [w for w in windows if w.model_version == outcome.promoted_versions[0]]
    assert new_windows, "no prediction carried the promoted version"
    assert any(e.kind == "retrain_finished" for e in events)
    # Realised performance: the new model beats the old one on the same events.
    # Windows with too few failures judge nothing on f1 (``judged`` 0); the others compare the models.
    new_perf = [w.metrics for w in new_windows if w.kind == "performance" and w.metrics and "f1" in w.metrics
                and "previous_f1" in w.metrics]
    assert new_perf, [w.metrics for w in new_windows if w.kind == "performance"]
    new_f1 = sum(m["f1"] for m in new_perf) / len(new_perf)
    old_f1 = sum(m["previous_f1"] for m in new_perf) / len(new_perf)
    assert new_f1 > old_f1, new_perf
    summary = summarise(settings, onset, outcome.initial_version)
    assert summary.false_alarms == 0
    assert summary.f1_after_promotion is not None and summary.f1_after_drift_old_model is not None
    assert summary.f1_after_promotion > summary.f1_after_drift_old_model
    assert outcome.report_path is not None and outcome.report_path.exists()
    assert (outcome.report_path.parent / "timeline.png").stat().st_size > 10_000
    # The report links every window's Evidently report by a path that opens from its folder, and
    # puts the old and the new champion's realised f1 side by side.
    page = outcome.report_path.read_text()
    links = re.findall(r'<a href="([^"]+[.]html)">', page)
    assert len(links) >= len([w for w in windows if w.report_html]) > 0
    assert all((outcome.report_path.parent / unquote(href)).is_file() for href in links), links[:3]
    assert "<th colspan=" in page and f">v{outcome.promoted_versions[0]}</th>" in page
    assert f">v{outcome.initial_version}</th>" in page
