"""Evaluation plots of a trained model on the validation part, logged with its run and its model version.

ROC curve, precision-recall curve, calibration (reliability) curve, confusion matrix at the chosen
decision threshold and feature importance (permutation importance on the validation part, so every
model family has one). Figures use matplotlib's object API on the Agg canvas: no pyplot global state,
no display needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.inspection import permutation_importance
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline

__all__ = ["CALIBRATION_BINS", "PLOT_FILES", "TOP_FEATURES", "calibration", "confusion", "importance",
           "importance_table", "pr_curve", "roc", "write_all"]

TOP_FEATURES = 20
CALIBRATION_BINS = 10

PLOT_FILES = ("roc_curve.png", "pr_curve.png", "calibration.png", "confusion_matrix.png", "feature_importance.png")
"""The files :func:`write_all` writes, the same for every model version."""


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _nearest(thresholds: np.ndarray, threshold: float) -> int:
    return int(np.argmin(np.abs(thresholds - threshold))) if len(thresholds) else 0


def roc(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> Figure:
    """True against false positive rate on the validation part, with the chosen threshold marked."""
    false_positive, true_positive, thresholds = roc_curve(y_true, probability)
    auc = roc_auc_score(y_true, probability) if len(np.unique(y_true)) == 2 else float("nan")
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(false_positive, true_positive, label=f"validation (AUC {auc:.3f})")
    at = _nearest(thresholds, threshold)
    axes.scatter([false_positive[at]], [true_positive[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)",
             xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower right")
    return figure


def pr_curve(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> Figure:
    """Precision against recall on the validation part, with the chosen threshold marked."""
    precision, recall, thresholds = precision_recall_curve(y_true, probability)
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(recall, precision, label="validation")
    at = _nearest(thresholds, threshold)
    axes.scatter([recall[at]], [precision[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    axes.axhline(float(np.mean(y_true)), color="grey", linestyle="--", label="base rate")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall (validation)", xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower left")
    return figure


def calibration(y_true: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS) -> Figure:
    """Observed failure rate against the mean predicted probability per quantile bin (validation part),
    with the count of predictions per bin below: a calibrated model follows the diagonal."""
    observed, predicted = calibration_curve(y_true, probability, n_bins=bins, strategy="quantile")
    figure = _figure(6.0, 6.0)
    curve, counts = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    curve.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    curve.plot(predicted, observed, marker="o", label="validation")
    curve.set(ylabel="observed failure rate", title="Calibration (validation)", xlim=(0, 1), ylim=(0, 1.02))
    curve.legend(loc="upper left")
    counts.hist(probability, bins=20, range=(0, 1), color="tab:blue", alpha=0.7)
    counts.set(xlabel="predicted probability", ylabel="readings", yscale="log")
    figure.tight_layout()
    return figure


def confusion(y_true: np.ndarray, decision: np.ndarray, threshold: float | None = None) -> Figure:
    """Confusion matrix of the decisions at the chosen threshold on the validation part."""
    matrix = confusion_matrix(y_true, decision, labels=[0, 1])
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    at = "" if threshold is None else f" at threshold {threshold:.3f}"
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["ok", "fails"], yticklabels=["ok", "fails"],
             xlabel="predicted", ylabel="actual", title=f"Confusion{at} (validation)")
    figure.tight_layout()
    return figure


def importance_table(pipeline: Pipeline, x_val: pd.DataFrame, y_val: np.ndarray, seed: int,
                     max_rows: int = 2000) -> pd.Series:
    """Mean drop in average precision when one feature is shuffled, largest first."""
    sample = x_val.sample(n=min(max_rows, len(x_val)), random_state=seed) if len(x_val) > max_rows else x_val
    y_sample = y_val[x_val.index.get_indexer(sample.index)]
    result = permutation_importance(pipeline, sample, y_sample, scoring="average_precision", n_repeats=3,
                                    random_state=seed, n_jobs=1)
    return pd.Series(result.importances_mean, index=x_val.columns).sort_values(ascending=False)


def importance(table: pd.Series) -> Figure:
    """Bar chart of the top features of :func:`importance_table`."""
    top = table.head(TOP_FEATURES)[::-1]
    figure = _figure(6.5, max(3.0, 0.3 * len(top) + 1))
    axes = figure.add_subplot()
    axes.barh(top.index, top.to_numpy())
    axes.set(xlabel="drop in average precision when shuffled", title="Feature importance (permutation, validation)")
    figure.tight_layout()
    return figure


def write_all(directory: Path, y_true: np.ndarray, probability: np.ndarray, threshold: float,
              importances: pd.Series) -> list[Path]:
    """Render every plot of :data:`PLOT_FILES` (and the importances as JSON) into ``directory``."""
    decision = (probability >= threshold).astype(int)
    figures = {
        "roc_curve.png": roc(y_true, probability, threshold),
        "pr_curve.png": pr_curve(y_true, probability, threshold),
        "calibration.png": calibration(y_true, probability),
        "confusion_matrix.png": confusion(y_true, decision, threshold),
        "feature_importance.png": importance(importances),
    }
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOT_FILES:
        path = directory / name
        figures[name].savefig(path)
        written.append(path)
    table = directory / "feature_importance.json"
    table.write_text(json.dumps({str(k): float(v) for k, v in importances.items()}, indent=2))
    written.append(table)
    return written
