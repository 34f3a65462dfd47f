"""Model family names the configuration may use, importable without scikit-learn.

The settings check ``train.search_space`` against these when they load (:mod:`mlops.config`).
Metric names live in :mod:`mlops.evaluation.names`.
"""

from __future__ import annotations

__all__ = ["FAMILIES"]

FAMILIES = ("hist_gradient_boosting", "random_forest", "logistic_regression")
"""Model families :func:`mlops.train.model.build_pipeline` can build."""
