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


@pytest.mark.parametrize("threshold", [0.05, 0.9])
def test_performance_is_that_of_the_served_decisions_at_the_models_threshold(threshold: float) -> None:
    # A threshold far from 0.5: a library cutting the probabilities at 0.5 would report other numbers.
    rng = np.random.default_rng(11)
    labels = (rng.uniform(size=1000) < 0.12).astype(int)
    probabilities = np.clip(rng.beta(1, 8, 1000) + 0.5 * labels * rng.uniform(size=1000), 0, 1)
    decisions = (probabilities >= threshold).astype(int)
    metrics, _snapshot = performance(labels.tolist(), probabilities.tolist(), decisions.tolist(), min_positives=20)
    at_half = (probabilities >= 0.5).astype(int)
    assert f1_score(labels, decisions) != pytest.approx(f1_score(labels, at_half), abs=0.05)
    assert metrics["f1"] == pytest.approx(f1_score(labels, decisions))
    assert metrics["precision"] == pytest.approx(precision_score(labels, decisions, zero_division=0))
    assert metrics["recall"] == pytest.approx(recall_score(labels, decisions))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, decisions))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics["predicted_positive_rate"] == pytest.approx(decisions.mean())
    assert metrics["positive_rate"] == pytest.approx(labels.mean())
    assert (metrics["n_labelled"], metrics["n_positive"], metrics["judged"]) == (1000, labels.sum(), 1.0)


def test_a_window_with_too_few_positives_judges_nothing_on_f1() -> None:
    labels = [1] * 5 + [0] * 195
    metrics, _snapshot = performance(labels, [0.9] * 5 + [0.1] * 195, [1] * 5 + [0] * 195, min_positives=20)
    assert not {"f1", "precision", "recall", "roc_auc"} & metrics.keys()
    assert metrics["judged"] == 0.0 and metrics["n_positive"] == 5 and metrics["accuracy"] == 1.0
    with pytest.raises(ValidationError, match="same, non-zero number"):
        performance([1, 0], [0.5], [1, 0])


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


def _simulated_features(scenario: str, readings: int, seed: int = 1) -> tuple[pd.DataFrame, list[str], datetime | None]:
    """Features of a simulated fleet (20 devices, the demo's) in stream order, and its drift onset."""
    from mlops.data.scenarios import load_scenario
    from mlops.data.schemas import Reading
    from mlops.data.simulator import Simulator
    from mlops.features.compute import FeatureSpec, features_frame

    sim = Simulator(load_scenario(scenario), devices=20, seed=seed, cycle_seconds=60)
    rows = pd.DataFrame([e.to_row() for e in sim.events(max_readings=readings) if isinstance(e, Reading)])
    spec = FeatureSpec(("current", "pressure", "rpm", "temperature", "vibration"), 10)
    features = features_frame(rows, spec).sort_values(["event_time", "device_id"], kind="stable")
    return features.reset_index(drop=True), spec.feature_names(), sim.onset.event_time if sim.onset else None


def _triggers(scenario: str, hours_after_history: float, seed: int = 1) -> list[datetime]:
    """End times of the windows where the policy would trigger on the calibrated verdict, against the history."""
    from mlops.config import load_settings
    from mlops.monitor.calibration import calibrate

    settings = load_settings("local")
    policy, history = settings.policy, settings.demo.history_readings
    features, names, _onset = _simulated_features(scenario, history + int(hours_after_history * 60 * 20), seed)
    # The initial model's training split, the first three quarters of the history: its reference and calibration.
    training = features.iloc[: history * 3 // 4]
    reference = training.sample(n=settings.train.reference_rows, random_state=0).sort_index()
    calibration = calibrate(training, names, window_size=policy.window_size, false_alarm_rate=policy.false_alarm_rate,
                            reference_rows=len(reference))
    triggers, streak = [], 0
    for start in range(history, len(features) - policy.window_size + 1, calibration.hop):
        window = features.iloc[start:start + policy.window_size]
        outcome = data_drift(window, reference, names, policy.drift_threshold, None, policy.feature_drift_threshold,
                             calibration)
        streak = streak + 1 if outcome.drifted else 0
        if streak == policy.drift_consecutive_windows:
            triggers.append(window["event_time"].max().to_pydatetime())
    return triggers


def test_the_calibrated_drift_threshold_ignores_a_stationary_fleet_for_three_days() -> None:
    # The fleet's loads wander and the ambient temperature follows the day (the history holds one day
    # of it): level features move, failures do not change. A window every 25 minutes.
    assert _triggers("stationary", 72) == []


def test_the_calibrated_drift_threshold_catches_a_recalibration_within_an_hour() -> None:
    _features, _names, onset = _simulated_features("recalibration", 100)
    triggers = _triggers("recalibration", 8)  # the onset is 6 h after the history
    assert onset is not None and triggers
    assert onset < triggers[0] <= onset + timedelta(hours=1)
