"""Probation on the real broker and MLflow: a promoted champion that serves worse than the one it
replaced, on the same live events, is rolled back by the loop; one that serves better stays.

The monitor and the loop controller are wired as `mlops loop run` wires them. Version 1 is the
champion; the loop promotes version 2 (forced: the gate is not what is tested here), which then
serves. Its predictions carry their features, so the monitor scores version 1 on the same events
(``previous_f1``). Both versions are the same ranking model; only their decision thresholds
differ: at 0.99 it flags only the surest failures and misses about half of the others. So which
one is worse on live events is known in advance, whatever the noise of a window's f1, and the
control (thresholds swapped) sees the same windows with the roles reversed.

Each event is one prediction of its own device, 15 s of event time after the previous one. A
failing device gets a failure label 30 s after its prediction, inside the 3-minute horizon (3
cycles of 60 s). Labels are produced, and read by the monitor, before the predictions: a failure
read after its prediction's deadline (horizon + lateness on the event clock) would rightly be
ignored and the prediction judged negative.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops import kafka, store
from mlops.config import Settings, load_settings
from mlops.kafka import TopicSpec
from mlops.monitor.service import Monitor, MonitorStatus
from mlops.store.results import WindowResult
from mlops.testing import SPEC, T0, CommittedReader, register_model, topic_overrides, unique
from tests.integration.test_monitor import _attach_reference, _features, _produce

pytestmark = pytest.mark.integration

FEATURES = SPEC.feature_names()
WINDOW = 40
PROBATION = 2
STEP = timedelta(seconds=15)
FAILS_AFTER = timedelta(seconds=30)
OLD_EVENTS, NEW_EVENTS = 40, 120  # the new champion's: two performance windows judged, and the clock past them


def _settings(services: Settings, tmp_path: Path) -> Settings:
    tag = unique("probation")
    return load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers, "topics": topic_overrides(tag)},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": "probation-tests"},
        "database": {"url": f"sqlite:///{tmp_path / 'mlops.db'}"},
        "features": {"horizon_cycles": 3, "cycle_seconds": 60},
        # Drift is not what this test is about: a drift share of 1.0 (every feature, n_readings
        # included, which never moves) cannot be reached, so no drift retraining starts.
        "policy": {"window_size": WINDOW, "probation_windows": PROBATION, "min_window_positives": 5,
                   "label_lateness_s": 60, "guard_tolerance": 0.02, "drift_threshold": 1.0},
        "monitor": {"group_id": unique("monitor"), "min_window": 10, "poll_timeout_s": 0.2},
    })


def _events(settings: Settings, old: str, new: str, thresholds: dict[str, float],
            seed: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], list[tuple[str, bytes]], int]:
    """Predictions served by ``old`` then ``new`` (each scored by the registered model, decided at its
    threshold), and the failure labels of the devices that fail: old's, new's records, labels, positives."""
    from mlops.registry.loader import load_version

    rng = np.random.default_rng(seed)
    rows = _features(rng, OLD_EVENTS + NEW_EVENTS)
    # The rule the helper's models learn: the first feature plus noise above 0 means a failure.
    fails = (rows[FEATURES[0]] + rng.normal(scale=0.5, size=len(rows)) > 0).to_numpy()
    models = {v: load_version(settings, v) for v in (old, new)}
    assert {v: m.threshold for v, m in models.items()} == thresholds
    served: dict[str, list[tuple[str, bytes]]] = {old: [], new: []}
    labels: list[tuple[str, bytes]] = []
    for i in range(len(rows)):
        version = old if i < OLD_EVENTS else new
        device, at = f"dev-{i:04d}", T0 + i * STEP
        features = {k: float(v) for k, v in rows.iloc[i].items()}
        probability = float(models[version].predict_proba(rows.iloc[[i]][FEATURES].to_numpy(dtype=np.float64))[0])
        record = {"schema_version": 1, "device_id": device, "event_time": at.isoformat(),
                  "probability": probability, "decision": int(probability >= models[version].threshold),
                  "model_name": settings.mlflow.registered_model, "model_version": version, "features": features,
                  "scored_at": at.isoformat()}
        served[version].append((device, json.dumps(record).encode()))
        if fails[i]:
            label = {"schema_version": 1, "device_id": device, "kind": "failure",
                     "event_time": (at + FAILS_AFTER).isoformat()}
            labels.append((device, json.dumps(label).encode()))
    return served[old], served[new], labels, int(fails.sum())


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert alive(), f"the monitor stopped before {what}"
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f}s: {what}"
        time.sleep(0.1)  # polling a condition set by the monitor's thread


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("old_threshold", "new_threshold", "rolled_back"), [
    pytest.param(0.5, 0.99, True, id="worse-new-champion-rolled-back"),
    pytest.param(0.99, 0.5, False, id="better-new-champion-stays"),
])
def test_probation_judges_the_new_champion_against_the_replaced_one_on_live_events(
        services: Settings, tmp_path: Path, old_threshold: float, new_threshold: float, rolled_back: bool) -> None:
    from mlops.cli.loop_control import champion_baseline, champion_version
    from mlops.monitor.controller import LoopController
    from mlops.registry.catalog import aliases

    settings = _settings(services, tmp_path)
    topics = settings.kafka.topics
    # One partition each: the monitor reads the events in the order they were served.
    kafka.ensure_topics(settings.kafka, [TopicSpec(t, 1, {}) for t in (topics.predictions, topics.labels, topics.dlq,
                                                                       topics.model_events)])
    rng = np.random.default_rng(5)
    old = register_model(settings, seed=1, threshold=old_threshold)  # the champion
    new = register_model(settings, seed=1, threshold=new_threshold, alias=None)
    for version in (old, new):
        _attach_reference(settings, version, _features(rng, 400))
    old_records, new_records, labels, positives = _events(settings, old, new, {old: old_threshold,
                                                                               new: new_threshold}, seed=9)
    model_events = CommittedReader(settings, topics.model_events)

    # As `mlops loop run` starts them.
    lines: list[str] = []
    controller = LoopController(settings, report=lines.append, baseline_metric=champion_baseline(settings))
    controller.champion_version = champion_version(settings)
    assert controller.champion_version == old
    monitor = Monitor(settings)
    seen: list[WindowResult] = []

    @monitor.on_window
    def _act(result: WindowResult) -> None:
        seen.append(result)
        controller.on_window(result)

    stop = threading.Event()
    finished: list[MonitorStatus] = []
    thread = threading.Thread(target=lambda: finished.append(monitor.run(stop=stop)), name="monitor")
    thread.start()
    try:
        _produce(settings, topics.labels, labels)
        _wait(lambda: monitor.status.labels == len(labels), 60, f"the monitor read {len(labels)} labels",
              thread.is_alive)
        _produce(settings, topics.predictions, old_records)
        _wait(lambda: monitor.status.predictions == OLD_EVENTS, 60, "the monitor read the old champion's predictions",
              thread.is_alive)

        verdict = controller.promote(new, reason="test: a promotion the loop watches", force=True)
        assert (verdict.promoted, verdict.previous_version) == (True, old)
        assert aliases(settings).get("champion") == new
        assert controller.core.probation is not None and controller.core.probation.previous_version == old

        _produce(settings, topics.predictions, new_records)
        _wait(lambda: controller.core.probation is None, 120, f"{PROBATION} probation windows judged",
              thread.is_alive)
        assert controller.wait_idle(60), "the rollback did not finish"
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive() and finished
    status = finished[0]

    # Every failing device's label joined its prediction as a positive (none arrived too late).
    assert status.counts["label_positive"] == positives, status.counts
    probation = [r for r in seen if r.kind == "performance" and r.model_version == new][:PROBATION]
    assert len(probation) == PROBATION
    for window in probation:
        metrics = window.metrics or {}
        assert metrics.get("judged") == 1.0 and metrics["n_positive"] >= 5, metrics
        assert {"f1", "previous_f1"} <= metrics.keys(), metrics
    new_f1 = float(np.mean([(w.metrics or {})["f1"] for w in probation]))
    old_f1 = float(np.mean([(w.metrics or {})["previous_f1"] for w in probation]))
    assert (new_f1 < old_f1 - 0.02) is rolled_back, (new_f1, old_f1)

    events = store.list_events(settings, model_name=settings.mlflow.registered_model)
    kinds = [e.kind for e in events]
    assert "trigger" not in kinds and "retrain_started" not in kinds, kinds
    promotion = next(e for e in events if e.kind == "promotion")
    assert (promotion.model_version, promotion.previous_version, promotion.actor) == (new, old, "loop")
    rollbacks = [e for e in events if e.kind == "rollback"]
    if rolled_back:
        assert aliases(settings).get("champion") == old
        (rollback,) = rollbacks
        assert (rollback.model_version, rollback.previous_version, rollback.actor) == (old, new, "loop")
        assert rollback.reason == (f"version {new} f1 {new_f1:.3f} against version {old}'s {old_f1:.3f} on the "
                                   f"same events over {PROBATION} windows (worse by more than 0.020)")
        assert controller.champion_version == old
    else:
        assert aliases(settings).get("champion") == new and not rollbacks, kinds
        passed = [e for e in events if e.kind == "evaluation" and (e.reason or "").startswith("probation passed")]
        assert len(passed) == 1 and passed[0].model_version == new, [e.reason for e in events]
        assert controller.champion_version == new
    # The scorers' hint: the loop's promotion and, if any, its rollback, in order.
    expected: list[tuple[Any, ...]] = [("promote", new, "loop")] + ([("rollback", old, "loop")] if rolled_back else [])
    model_events.wait_for(len(expected), 30)
    assert [(e["action"], e["version"], e["actor"]) for e in model_events.records] == expected
    model_events.close()
