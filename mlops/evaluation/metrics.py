"""A model's metrics on labelled rows, by the stable names of :mod:`~mlops.evaluation.names`.

Ranking metrics (ROC AUC, PR AUC) read the probabilities; the others read the decisions the model
serves, at its own decision threshold, so a training run's ``val_f1`` and the gate's f1 mean the same.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mlops.evaluation.names import METRIC_NAMES

__all__ = ["METRIC_NAMES", "evaluate", "metric"]


def metric(name: str, y_true: np.ndarray, probability: np.ndarray, threshold: float) -> float:
    """One validation metric by its stable name; the ranking metrics are NaN on one class."""
    if name in ("roc_auc", "pr_auc"):
        if len(np.unique(y_true)) < 2:
            return float("nan")
        ranking = roc_auc_score if name == "roc_auc" else average_precision_score
        return float(ranking(y_true, probability))
    decision = (probability >= threshold).astype(int)
    if name == "accuracy":
        return float(accuracy_score(y_true, decision))
    scorer = {"f1": f1_score, "precision": precision_score, "recall": recall_score}[name]
    return float(scorer(y_true, decision, zero_division=0))


def evaluate(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """Validation metrics by their stable names (without the ``val_`` prefix)."""
    return {name: metric(name, y_true, probability, threshold) for name in METRIC_NAMES}
