"""The monitor on the real broker and MLflow: windows, drift, late labels, a champion change, records.

Two registered versions of a unique model: v1 with a reference that holds probabilities, v2 with
one that does not (its first window is its prediction reference). v1 predicts on data like its
reference, v2 on shifted data. Labels (failures, a maintenance) arrive on their own topic.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.kafka import TopicSpec
from mlops.mlflow import tracking_client
from mlops.monitor.reports import monitor_experiment
from mlops.monitor.service import Monitor, MonitorStatus
from mlops.store import results
from mlops.store.results import WindowResult
from mlops.testing import SPEC, T0, register_model, topic_overrides, unique

pytestmark = pytest.mark.integration

FEATURES = SPEC.feature_names()
DEVICES = 10
WINDOW = 50


def _settings(services: Settings, tmp_path: Path) -> Settings:
    tag = unique("mon")
    return load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers, "topics": topic_overrides(tag)},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": "monitor-tests"},
        "features": {"horizon_cycles": 3, "cycle_seconds": 60},
        "policy": {"window_size": WINDOW, "label_lateness_s": 60, "min_window_positives": 5},
        "monitor": {"group_id": unique("monitor"), "min_window": 10, "poll_timeout_s": 0.2},
    })


def _features(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    data = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))) + shift, columns=FEATURES)
    data["n_readings"] = 5.0
    return data


def _attach_reference(settings: Settings, version: str, reference: pd.DataFrame) -> None:

    client = tracking_client(settings)
    run_id = client.get_model_version(settings.mlflow.registered_model, version).run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        reference.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), "reference")


def _prediction(settings: Settings, device: int, cycle: int, version: str, features: dict[str, float],
                probability: float) -> dict[str, Any]:
    return {"schema_version": 1, "device_id": f"dev-{device}", "cycle": cycle,
            "event_time": (T0 + timedelta(seconds=60 * cycle)).isoformat(), "probability": probability,
            "decision": int(probability >= 0.5), "model_name": settings.mlflow.registered_model,
            "model_version": version, "features": features,
            "source": {"topic": settings.kafka.topics.readings, "partition": device % 2,
                       "offset": cycle * 100 + device},
            "scored_at": T0.isoformat()}


def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = kafka.producer(settings.kafka)
    for key, value in records:
        producer.produce(topic, value=value, key=key.encode())
    assert producer.flush(30) == 0


def test_monitor_judges_windows_records_them_and_follows_a_champion_change(services: Settings,
                                                                          tmp_path: Path) -> None:
    settings = _settings(services, tmp_path)
    topics = settings.kafka.topics
    # One partition: windows and judging then follow the produced order exactly (partition skew is
    # covered by the unit tests).
    kafka.ensure_topics(settings.kafka, [TopicSpec(topics.predictions, 1, {}), TopicSpec(topics.labels, 1, {}),
                                         TopicSpec(topics.dlq, 1, {})])
    rng = np.random.default_rng(3)
    v1 = register_model(settings, seed=1)
    reference = _features(rng, 400).assign(probability=rng.beta(2, 5, 400))
    _attach_reference(settings, v1, reference)
    v2 = register_model(settings, seed=2)
    _attach_reference(settings, v2, _features(rng, 400))  # no probability column

    # v1 scores cycles 0..9 like its reference; v2 (the new champion) cycles 10..19 on shifted data.
    records: list[tuple[str, bytes]] = []
    for cycle in range(20):
        version, shift = (v1, 0.0) if cycle < 10 else (v2, 3.0)
        row = _features(rng, DEVICES, shift)
        for device in range(DEVICES):
            features = {k: float(v) for k, v in row.iloc[device].items()}
            probability = float(rng.beta(2, 5)) if shift == 0 else float(rng.beta(5, 2))
            records.append((f"dev-{device}", json.dumps(_prediction(settings, device, cycle, version, features,
                                                                    probability)).encode()))
    records.insert(7, ("dev-x", b"{not json"))
    labels = [{"schema_version": 1, "device_id": f"dev-{d}", "kind": "failure",
               "event_time": (T0 + timedelta(seconds=60 * 5.5)).isoformat()} for d in range(3)]
    labels.append({"schema_version": 1, "device_id": "dev-3", "kind": "maintenance",
                   "event_time": (T0 + timedelta(seconds=60 * 6.5)).isoformat()})

    seen: list[WindowResult] = []
    monitor = Monitor(settings)
    monitor.on_window(seen.append)
    # Drift windows slide (one every half window): v1 3 windows, v2 3 windows. Performance: 97 v1
    # predictions are judged (3 censored): 1 window; of v2 those with t + 3 + 1 cycles <= 19 (60): 1 window.
    finished: list[MonitorStatus] = []
    thread = threading.Thread(target=lambda: finished.append(monitor.run(max_windows=8, idle_exit_s=30)))
    thread.start()
    # Labels first, and seen by the monitor before the predictions: which one a consumer reads first
    # across topics is otherwise up to the broker, and a label read after its predictions' deadline
    # (horizon + lateness on the event clock) would rightly be ignored.
    _produce(settings, topics.labels, [(lab["device_id"], json.dumps(lab).encode()) for lab in labels])
    deadline = time.monotonic() + 60
    while monitor.status.labels < len(labels) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert monitor.status.labels == len(labels)
    _produce(settings, topics.predictions, records)
    thread.join(timeout=300)
    assert not thread.is_alive() and finished
    status = finished[0]

    assert status.windows == 8 and status.dead_letters == 1
    assert status.counts["label_positive"] == 9 and status.counts["label_censored"] == 3
    engine = results.engine_for(settings)
    saved = results.list_results(engine, session_run_id=status.run_id)
    assert [r.window_id for r in saved] == sorted(r.window_id for r in seen)
    drift_v1 = [r for r in saved if r.kind == "drift" and r.model_version == v1]
    drift_v2 = [r for r in saved if r.kind == "drift" and r.model_version == v2]
    assert len(drift_v1) == 3 and len(drift_v2) == 3
    assert all(r.n_predictions == WINDOW for r in drift_v1 + drift_v2)
    assert all(r.drift_share is not None and r.drift_share < 0.5 and not r.dataset_drift for r in drift_v1)
    assert all(r.prediction_drift is not None for r in drift_v1)  # v1's reference has probabilities
    assert all(r.dataset_drift and r.drift_share is not None and r.drift_share > 0.5 for r in drift_v2)
    assert [r.prediction_drift is None for r in drift_v2] == [True, False, False]  # v2's first window: the reference
    assert drift_v1[0].source_offsets  # the readings' offsets the window covers
    perf = [r for r in saved if r.kind == "performance"]
    assert sorted(r.model_version for r in perf) == sorted([v1, v2])
    perf_v1 = next(r for r in perf if r.model_version == v1)
    assert perf_v1.metrics is not None and {"f1", "accuracy", "positive_rate"} <= perf_v1.metrics.keys()
    assert perf_v1.metrics["n_positive"] == 9 and perf_v1.metrics["judged"] == 1.0
    perf_v2 = next(r for r in perf if r.model_version == v2)
    # No failure among v2's events: the window says so and judges nothing on f1.
    assert perf_v2.metrics is not None and perf_v2.metrics["judged"] == 0.0 and "f1" not in perf_v2.metrics
    assert "previous_accuracy" in perf_v2.metrics  # v1 scored on v2's events

    for r in saved:
        assert r.report_html and Path(r.report_html).stat().st_size > 1000
        assert r.report_json and json.loads(Path(r.report_json).read_text())["metrics"]
        assert Path(r.report_html) == settings.reports_dir / "windows" / f"{r.window_id}.html"


    client = tracking_client(settings)
    run = client.get_run(status.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == monitor_experiment(settings)
    steps = sorted(m.step for m in client.get_metric_history(status.run_id, "drift_share"))
    assert steps == sorted(r.window_id for r in drift_v1 + drift_v2)  # type: ignore[type-var]
    assert len(client.get_metric_history(status.run_id, "f1")) == 1
    first = saved[0].window_id
    artifacts = {Path(f.path).name for f in client.list_artifacts(status.run_id, f"windows/{first}")}
    assert artifacts == {f"{first}.html", f"{first}.json"}
