"""The model family: a scikit-learn pipeline predicting "device fails within H" with calibrated probabilities.

Every candidate is ``Pipeline([impute, scale, CalibratedClassifierCV(classifier)])``:

- the imputer covers the NaN a constant sensor's slope or an early window can produce;
- class imbalance (failures are rare) is handled by ``class_weight="balanced"`` in every family;
- the weighted classifier's scores are then calibrated (sigmoid or isotonic, cross-validated on the
  training part) so that ``predict_proba`` is a probability the monitor and the decision threshold
  can rely on. The calibrator learns from out-of-fold scores and the served classifier is one model
  fitted on the whole training part (``ensemble=False``): one classifier per prediction instead of
  one per fold, which makes a one-reading prediction (the API's, the scorer's small batches) about
  2.5 times faster for the same ROC AUC.

The decision threshold is chosen on the validation part: the one with the highest F1, with the
validation rows weighted to the training part's positive rate (:func:`rate_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops.errors import TrainingError
from mlops.evaluation.metrics import evaluate
from mlops.train.names import FAMILIES
from mlops.train.regimes import MIN_WEIGHT, weighted_rate

__all__ = ["Fitted", "best_f1_threshold", "build_pipeline", "fit_and_score", "rate_weights"]


def _classifier(family: str, params: dict[str, Any], seed: int) -> ClassifierMixin:
    # One thread per fit: the parallelism is across candidates (Spark tasks), not inside one.
    if family == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(class_weight="balanced", random_state=seed, **params)
    if family == "random_forest":
        return RandomForestClassifier(class_weight="balanced", random_state=seed, n_jobs=1, **params)
    if family == "logistic_regression":
        return LogisticRegression(class_weight="balanced", max_iter=2000, **params)
    raise TrainingError(f"unknown model family {family!r} in train.search_space (known: {', '.join(FAMILIES)})")


def build_pipeline(family: str, params: dict[str, Any], *, seed: int, calibration: str = "sigmoid",
                   folds: int = 3) -> Pipeline:
    """The pipeline for one candidate; unfitted."""
    calibrated = CalibratedClassifierCV(
        _classifier(family, params, seed),
        method=calibration,
        ensemble=False,  # serve one classifier, not one per fold (see the module docstring)
        # Fixed, unshuffled folds: the same data gives the same calibration every time.
        cv=StratifiedKFold(n_splits=folds, shuffle=False),
    )
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("classifier", calibrated),
    ])


def rate_weights(y_true: np.ndarray, target_rate: float | None) -> np.ndarray | None:
    """Sample weights that give ``y_true`` the positive rate ``target_rate`` (None: no reweighting needed).

    A time split's validation part can hold far more (or fewer) failures than the training window
    (a fleet that ages, failures that come in waves). The F1-best threshold moves with the positive
    rate, so it is chosen at the rate the model will meet, the training window's, not the
    validation part's: a threshold of 0.002 picked at a 50 % rate flagged 80 % of live readings at 12 %.
    """
    rate = float(np.mean(y_true)) if len(y_true) else 0.0
    if target_rate is None or not 0 < rate < 1 or not 0 < target_rate < 1:
        return None
    return np.where(y_true == 1, target_rate / rate, (1 - target_rate) / (1 - rate))


def best_f1_threshold(y_true: np.ndarray, probability: np.ndarray, target_rate: float | None = None) -> float:
    """The probability threshold with the highest F1 on (validation) data, weighted to ``target_rate``
    positives (:func:`rate_weights`); 0.5 if no positive exists."""
    if y_true.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, probability,
                                                           sample_weight=rate_weights(y_true, target_rate))
    denominator = precision[:-1] + recall[:-1]
    f1 = np.where(denominator > 0, 2 * precision[:-1] * recall[:-1] / np.where(denominator > 0, denominator, 1), 0)
    return float(thresholds[int(np.argmax(f1))])


@dataclass(frozen=True)
class Fitted:
    """A fitted candidate with its validation threshold and metrics."""

    pipeline: Pipeline
    threshold: float
    metrics: dict[str, float]
    probability: np.ndarray


def fit_and_score(family: str, params: dict[str, Any], x_train: pd.DataFrame, y_train: np.ndarray,
                  x_val: pd.DataFrame, y_val: np.ndarray, *, seed: int, calibration: str, folds: int,
                  sample_weight: np.ndarray | None = None) -> Fitted:
    """Fit one candidate on the training part (rows weighted by ``sample_weight``; those under
    :data:`~mlops.train.regimes.MIN_WEIGHT` left out), choose its threshold (for the training part's
    weighted positive rate) and score it on the validation part."""
    pipeline = build_pipeline(family, params, seed=seed, calibration=calibration, folds=folds)
    fit_params: dict[str, Any] = {}
    if sample_weight is not None:
        keep = sample_weight >= MIN_WEIGHT
        x_train, y_train, sample_weight = x_train[keep], y_train[keep], sample_weight[keep]
        if not np.all(sample_weight == 1.0):
            fit_params["classifier__sample_weight"] = sample_weight
    pipeline.fit(x_train, y_train, **fit_params)
    probability = pipeline.predict_proba(x_val)[:, 1]
    target_rate = weighted_rate(y_train, fit_params.get("classifier__sample_weight"))
    threshold = best_f1_threshold(y_val, probability, target_rate=target_rate)
    return Fitted(pipeline, threshold, evaluate(y_val, probability, threshold), probability)
