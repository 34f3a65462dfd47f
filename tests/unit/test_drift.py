"""Drift and performance of a window, computed by the real Evidently on seeded synthetic data."""

from __future__ import annotations

import json

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
    report = json.loads(outcome.snapshot.json())  # what the monitor writes to <window-id>.json
    assert any("DriftedColumnsCount" in m["metric_name"] for m in report["metrics"])


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
