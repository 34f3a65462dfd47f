"""Drift and performance of a window, computed by the real Evidently on seeded synthetic data, and the
calibration of the drift thresholds on the simulated fleet."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mlops.errors import ValidationError
from mlops.monitor.drift import data_drift, performance

FEATURES = [f"s{i}__mean" for i in range(5)] + ["n_readings"]


def frame(rng: np.random.Generator, rows: int, shift: float = 0.0, shifted: int = 5) -> pd.DataFrame:
    values = rng.normal(size=(rows, 5))
    values[:, :shifted] += shift
    data = pd.DataFrame(values, columns=FEATURES[:5])
    data["n_readings"] = 10.0  # constant, as in a stream of full windows
    data["probability"] = rng.beta(2, 5, rows)
    return data


def test_same_distribution_shows_no_drift() -> None:
    rng = np.random.default_rng(7)
    reference, window = frame(rng, 1000), frame(rng, 300)
    outcome = data_drift(window, reference, FEATURES, drift_share=0.5, prediction_reference=reference["probability"])
    assert outcome.drift_share < 0.5 and not outcome.dataset_drift
    assert len(outcome.drifted_features) == round(outcome.drift_share * len(FEATURES))
    assert outcome.prediction_drift is not None and outcome.prediction_drift < 0.1


def test_shifted_features_and_probabilities_drift() -> None:
    rng = np.random.default_rng(8)
    reference, window = frame(rng, 1000), frame(rng, 300, shift=1.5, shifted=4)
    window["probability"] = rng.beta(5, 2, len(window))  # the model now says "failure" far more often
    outcome = data_drift(window, reference, FEATURES, drift_share=0.5, prediction_reference=reference["probability"])
    assert outcome.dataset_drift
    assert outcome.drifted_features[:4] == FEATURES[:4]
    assert outcome.drift_share == pytest.approx(len(outcome.drifted_features) / len(FEATURES))
    assert outcome.prediction_drift is not None and outcome.prediction_drift >= 0.1
    report = json.loads(outcome.report().json())  # what the monitor writes to <window-id>.json
    assert any("DriftedColumnsCount" in m["metric_name"] for m in report["metrics"])


def test_the_report_shows_the_verdicts_numbers() -> None:
    rng = np.random.default_rng(12)
    reference, window = frame(rng, 800), frame(rng, 300, shift=1.0, shifted=2)
    outcome = data_drift(window, reference, FEATURES, drift_share=0.3, prediction_reference=reference["probability"],
                         feature_threshold=0.5)
    result = outcome.report().dict()
    values = {m["config"]["column"]: m["value"] for m in result["metrics"]
              if m["config"]["type"].endswith("ValueDrift")}
    assert values.pop("probability") == pytest.approx(outcome.prediction_drift)
    assert values == pytest.approx(outcome.scores)
    count = next(m["value"] for m in result["metrics"] if m["config"]["type"].endswith("DriftedColumnsCount"))
    assert count["share"] == pytest.approx(outcome.drift_share)
    assert outcome.drifted_features == FEATURES[:2] and outcome.dataset_drift


def test_without_a_prediction_reference_there_is_no_prediction_drift() -> None:
    rng = np.random.default_rng(9)
    outcome = data_drift(frame(rng, 200), frame(rng, 500).drop(columns="probability"), FEATURES, 0.5, None)
    assert outcome.prediction_drift is None


def test_reference_of_another_feature_spec_is_refused() -> None:
    rng = np.random.default_rng(10)
    with pytest.raises(ValidationError, match=r"reference data lacks feature column\(s\) \['n_readings'\]"):
        data_drift(frame(rng, 50), frame(rng, 50).drop(columns="n_readings"), FEATURES, 0.5)


def test_performance_matches_sklearn() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 400)
    probabilities = np.clip(0.35 * labels + rng.uniform(size=400) * 0.65, 0, 1)
    decisions = (probabilities >= 0.5).astype(int)
    metrics, _snapshot = performance(labels.tolist(), probabilities.tolist(), decisions.tolist())
    assert metrics["f1"] == pytest.approx(f1_score(labels, decisions))
    assert metrics["precision"] == pytest.approx(precision_score(labels, decisions))
    assert metrics["recall"] == pytest.approx(recall_score(labels, decisions))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, decisions))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics["positive_rate"] == pytest.approx(labels.mean())
    assert metrics["n_labelled"] == 400


def test_performance_on_one_class_has_no_roc_auc() -> None:
    metrics, _snapshot = performance([0] * 30, [0.2] * 20 + [0.8] * 10, [0] * 20 + [1] * 10)
    assert "roc_auc" not in metrics
    assert metrics["accuracy"] == pytest.approx(20 / 30) and metrics["positive_rate"] == 0.0


def _simulated_features(scenario: str, readings: int) -> tuple[pd.DataFrame, list[str], datetime | None]:
    """Features of a simulated fleet (20 devices, seed 1, the demo's) in stream order, and its drift onset."""
    from mlops.data.scenarios import load_scenario
    from mlops.data.schemas import Reading
    from mlops.data.simulator import Simulator
    from mlops.features.compute import FeatureSpec, features_frame

    sim = Simulator(load_scenario(scenario), devices=20, seed=1, cycle_seconds=60)
    rows = pd.DataFrame([e.to_row() for e in sim.events(max_readings=readings) if isinstance(e, Reading)])
    spec = FeatureSpec(("current", "pressure", "rpm", "temperature", "vibration"), 10)
    features = features_frame(rows, spec).sort_values(["event_time", "device_id"], kind="stable")
    return features.reset_index(drop=True), spec.feature_names(), sim.onset.event_time if sim.onset else None


def _triggers(scenario: str, readings: int) -> list[datetime]:
    """End times of the windows where the local profile's policy would retrain, judged against the history."""
    from mlops.config import load_settings
    from mlops.monitor.policy import RetrainPolicy, WindowSignal

    settings = load_settings("local")
    policy, history = settings.policy, settings.demo.history_readings
    features, names, _onset = _simulated_features(scenario, readings)
    # The initial model's reference: its training split, the first three quarters of the history.
    reference = features.iloc[: history * 3 // 4]
    retrain = RetrainPolicy(policy.model_copy(update={"cooldown_s": 0.0, "max_retrains_per_day": 1000}))
    triggers = []
    for start in range(history, len(features) - policy.window_size + 1, policy.window_size):
        window = features.iloc[start:start + policy.window_size]
        outcome = data_drift(window, reference, names, policy.drift_threshold, None, policy.feature_drift_threshold)
        end = window["event_time"].max().to_pydatetime()
        if retrain.observe(WindowSignal(str(start), drift_share=outcome.drift_share), end).trigger:
            triggers.append(end)
            retrain.retraining_started(end)
            retrain.retraining_finished()
    return triggers


def test_the_drift_thresholds_ignore_a_stationary_fleet_for_a_day() -> None:
    # The fleet's loads wander and the ambient temperature follows the day: level features move,
    # failures do not change. 30 h of stream after the history, a window every ~50 minutes.
    assert _triggers("stationary", 8000 + 30 * 60 * 20) == []


def test_the_drift_thresholds_catch_a_recalibration_within_two_windows() -> None:
    _features, _names, onset = _simulated_features("recalibration", 100)
    triggers = _triggers("recalibration", 8000 + 6 * 60 * 20)
    assert onset is not None and triggers
    assert onset < triggers[0] <= onset + timedelta(hours=2)
