"""Training windows after a drift: one validation part since the drift, several training windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlops.errors import TrainingError
from mlops.train.model import fit_and_score
from mlops.train.regimes import ALL_ROWS, TRAINING_ROWS, regime_split, weighted_rate
from mlops.train.search import Candidate, SearchData, on_windows, sequential_search

START = datetime(2026, 1, 1, tzinfo=UTC)
GAP = timedelta(minutes=30)


def _frame(hours: int = 30, devices: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.date_range(START, periods=hours * 60, freq="1min", tz="UTC").repeat(devices)
    return pd.DataFrame({"event_time": times, "device_id": np.tile([f"d{i}" for i in range(devices)], hours * 60),
                         "label": (rng.random(len(times)) < 0.1).astype(np.int64)})


def test_every_window_is_validated_on_the_newest_rows_since_the_drift() -> None:
    frame, drift = _frame(), START + timedelta(hours=24)
    windows = regime_split(frame, drift, 0.25, GAP, min_positives=5, training_rows=list(TRAINING_ROWS))
    split = windows.split
    # The cut leaves a quarter of the 6 h since the drift to validation, not a quarter of the 30 h.
    assert pd.Timestamp(split.cut) == pd.Timestamp(drift + timedelta(hours=4.5))
    assert split.validation["event_time"].min() >= pd.Timestamp(split.cut)
    assert split.train["event_time"].max() < pd.Timestamp(split.cut) - GAP
    assert set(windows.weights) == set(TRAINING_ROWS) and windows.weights[ALL_ROWS] is None
    after = (split.train["event_time"] >= pd.Timestamp(drift)).to_numpy()
    regime, recent = windows.weights["regime"], windows.weights["recent"]
    assert regime is not None and recent is not None
    assert np.array_equal(regime, after.astype(float))
    # Recent: weight 1 since the drift; before it halved every (cut - gap - drift) = 4 h of age.
    assert np.all(recent[after] == 1.0)
    ages = (pd.Timestamp(drift) - split.train["event_time"][~after]) / pd.Timedelta(hours=1)
    assert np.allclose(recent[~after], 0.5 ** (ages.to_numpy() / 4.0))


def test_without_a_drift_start_it_is_the_plain_time_split() -> None:
    frame = _frame()
    for since in (None, START - timedelta(days=1), START + timedelta(days=5)):
        windows = regime_split(frame, since, 0.25, GAP, min_positives=5, training_rows=list(TRAINING_ROWS))
        assert list(windows.weights) == [ALL_ROWS] and windows.regime_since is None
        assert pd.Timestamp(windows.split.cut) == pd.Timestamp(START + timedelta(hours=22.5))


def test_a_drift_too_recent_to_validate_on_falls_back_and_a_thin_regime_is_skipped() -> None:
    frame = _frame()
    last_minutes = regime_split(frame, START + timedelta(hours=30) - timedelta(minutes=5), 0.25, GAP,
                                min_positives=5, training_rows=list(TRAINING_ROWS))
    assert list(last_minutes.weights) == [ALL_ROWS]  # too few positives since then for a validation part
    # 45 min since the drift: its last 11 min validate, but the 4 min of training rows since it
    # (0.75 x 45 min less the 30 min gap) hold too few positives to train on them alone.
    thin = regime_split(_frame(devices=40), START + timedelta(hours=29, minutes=15), 0.25, GAP, min_positives=20,
                        training_rows=list(TRAINING_ROWS))
    assert "regime" in thin.skipped and "regime" not in thin.weights and set(thin.weights) == {ALL_ROWS, "recent"}
    with pytest.raises(TrainingError, match="drift_training_rows"):
        regime_split(frame, START, 0.25, GAP, min_positives=5, training_rows=["newest"])


def test_weights_reach_the_fit_and_the_threshold_rate() -> None:
    # Old regime: x predicts the label one way; since the drift the other way. The regime window learns
    # the new rule, the whole window mostly the old one: judged on the new regime, the regime window wins.
    rng = np.random.default_rng(5)
    n = 4000
    x = pd.DataFrame({"x": rng.normal(size=n)})
    new = np.arange(n) >= 3000
    y = np.where(new, x["x"] < -1.0, x["x"] > 1.0).astype(np.int64)
    train, val = slice(0, 3600), slice(3600, n)
    weights = {ALL_ROWS: None, "regime": new[train].astype(float)}
    data = SearchData(x[train], y[train], x[val].reset_index(drop=True), y[val], seed=1, calibration="sigmoid",
                      folds=3, weights=weights)
    candidates = on_windows([Candidate(0, "logistic_regression", {"C": 1.0})], list(weights))
    assert [(c.index, c.rows) for c in candidates] == [(0, ALL_ROWS), (1, "regime")]
    results = {r.candidate.rows: r for r in sequential_search(candidates, data)}
    assert results["regime"].metrics["roc_auc"] > 0.9 > 0.5 > results[ALL_ROWS].metrics["roc_auc"]
    assert candidates[1].as_params()["training_rows"] == "regime"
    fitted = fit_and_score("logistic_regression", {"C": 1.0}, x[train], y[train], x[val].reset_index(drop=True),
                           y[val], seed=1, calibration="sigmoid", folds=3, sample_weight=weights["regime"])
    assert fitted.metrics["roc_auc"] == pytest.approx(results["regime"].metrics["roc_auc"])
    assert weighted_rate(y[train], weights["regime"]) == pytest.approx(float(np.mean(y[3000:3600])))
    assert weighted_rate(y[train], None) == pytest.approx(float(np.mean(y[train])))
