"""Evaluation plots logged with every training run: precision-recall curve, confusion matrix,
feature importance (permutation importance on the validation part, so every model family has one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import confusion_matrix, precision_recall_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from sklearn.pipeline import Pipeline

TOP_FEATURES = 20


def _figure(width: float = 6.0, height: float = 4.5) -> Figure:
    # The object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def pr_curve(y_true: np.ndarray, probability: np.ndarray, threshold: float) -> Figure:
    """Precision against recall on the validation part, with the chosen threshold marked."""
    precision, recall, thresholds = precision_recall_curve(y_true, probability)
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(recall, precision, label="validation")
    at = int(np.argmin(np.abs(thresholds - threshold))) if len(thresholds) else 0
    axes.scatter([recall[at]], [precision[at]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    axes.axhline(float(np.mean(y_true)), color="grey", linestyle="--", label="base rate")
    axes.set(xlabel="recall", ylabel="precision", title="Precision-recall (validation)", xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower left")
    return figure


def confusion(y_true: np.ndarray, decision: np.ndarray) -> Figure:
    """Confusion matrix of the decisions at the chosen threshold on the validation part."""
    matrix = confusion_matrix(y_true, decision, labels=[0, 1])
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    axes.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["ok", "fails"], yticklabels=["ok", "fails"],
             xlabel="predicted", ylabel="actual", title="Confusion matrix (validation)")
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
