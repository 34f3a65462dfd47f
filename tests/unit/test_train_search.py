"""Pure training logic: candidate sampling, the time split, thresholds and the search's choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlops.errors import TrainingError
from mlops.evaluation.metrics import evaluate
from mlops.train.job import TrainRequest, config_snapshot, parse_duration, resolve_window
from mlops.train.model import best_f1_threshold, rate_weights
from mlops.train.search import Candidate, CandidateResult, SearchData, choose_best, sample_candidates, sequential_search
from mlops.train.split import time_split

SPACE = {"a": {"x": [1, 2, 3], "y": [0.1, 0.2]}, "b": {"z": [None, 5]}}


def test_candidates_are_deterministic_distinct_and_take_turns() -> None:
    first = sample_candidates(SPACE, 5, seed=3)
    assert first == sample_candidates(SPACE, 5, seed=3)
    assert [c.family for c in first] == ["a", "b", "a", "b", "a"]
    assert len({(c.family, tuple(sorted(c.params.items()))) for c in first}) == 5
    assert sample_candidates(SPACE, 5, seed=4) != first
    assert len(sample_candidates(SPACE, 100, seed=3)) == 8  # the whole grid, no repeats


def test_empty_search_space_is_an_error() -> None:
    with pytest.raises(TrainingError, match="search_space"):
        sample_candidates({}, 3, seed=1)


def _frame(n: int = 400) -> pd.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(n)]
    return pd.DataFrame({"device_id": [f"d{i % 3}" for i in range(n)], "event_time": pd.to_datetime(times),
                         "label": [1 if i % 7 == 0 else 0 for i in range(n)]})


def test_time_split_keeps_training_before_the_cut_minus_the_gap() -> None:
    split = time_split(_frame(), 0.25, timedelta(minutes=30))
    assert split.train["event_time"].max() < pd.Timestamp(split.cut) - timedelta(minutes=30)
    assert split.validation["event_time"].min() >= pd.Timestamp(split.cut)
    assert len(split.validation) == 100 and len(split.train) == 270


def test_time_split_without_positives_fails() -> None:
    frame = _frame().assign(label=0)
    with pytest.raises(TrainingError, match="positive"):
        time_split(frame, 0.25, timedelta(0))


def test_threshold_maximises_f1_and_metrics_use_it() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    threshold = best_f1_threshold(y, p)
    assert threshold == pytest.approx(0.7)
    assert evaluate(y, p, threshold)["f1"] == pytest.approx(1.0)


def test_choose_best_uses_primary_metric_then_roc_auc_and_skips_failures() -> None:
    def result(i: int, f1: float, auc: float, error: str | None = None) -> CandidateResult:
        return CandidateResult(Candidate(i, "a", {}), {"f1": f1, "roc_auc": auc}, error=error)
    results = [result(0, 0.5, 0.9), result(1, 0.6, 0.7), result(2, 0.6, 0.8), result(3, 0.9, 0.9, error="boom")]
    assert choose_best(results, "val_f1").candidate.index == 2
    with pytest.raises(TrainingError, match="every candidate failed"):
        choose_best([result(0, 0.1, 0.1, error="boom")], "f1")


def test_sequential_search_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = (x["a"] + 0.3 * rng.normal(size=300) > 1).astype(int).to_numpy()
    data = SearchData(x[:200], y[:200], x[200:].reset_index(drop=True), y[200:], seed=1, calibration="sigmoid",
                      folds=3)
    space = {"logistic_regression": {"C": [0.1, 1.0]}, "hist_gradient_boosting": {"max_iter": [20]}}
    candidates = sample_candidates(space, 3, seed=1)
    one, two = sequential_search(candidates, data), sequential_search(candidates, data)
    assert [r.metrics for r in one] == [r.metrics for r in two]
    assert all(r.error is None and r.metrics["roc_auc"] > 0.8 for r in one)


def test_windows_and_durations() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_duration("7d") == timedelta(days=7) and parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(TrainingError, match="window"):
        parse_duration("week")
    assert resolve_window(TrainRequest(window="2h"), "7d", now) == (now - timedelta(hours=2), now)
    with pytest.raises(TrainingError, match="empty"):
        resolve_window(TrainRequest(since=now, until=now), "7d", now)


def test_config_snapshot_redacts_secrets() -> None:
    from mlops.config import load_settings

    snapshot = config_snapshot(load_settings("local"))
    assert snapshot["api"]["api_key"] == "***"
    assert snapshot["train"]["seed"] == 42


def test_the_threshold_is_chosen_at_the_training_parts_positive_rate() -> None:
    # Validation holds 50 % positives, the training window 10 %: at 50 % a low threshold wins F1,
    # at 10 % it would flag far too many healthy readings.
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(500), np.zeros(500)].astype(int)
    p = np.clip(np.r_[rng.beta(4, 2, 500), rng.beta(2, 4, 500)], 0, 1)
    at_validation_rate = best_f1_threshold(y, p)
    at_training_rate = best_f1_threshold(y, p, target_rate=0.1)
    assert at_training_rate > at_validation_rate + 0.1
    weights = rate_weights(y, 0.1)
    assert weights is not None and np.average(y, weights=weights) == pytest.approx(0.1)
    assert rate_weights(y, None) is None and rate_weights(np.zeros(4, dtype=int), 0.1) is None
