"""Names the configuration may use for model families and metrics, importable without scikit-learn.

The settings check ``train.search_space``, ``policy.primary_metric`` and ``policy.guard_metrics``
against these when they load (:mod:`mlops.config`); tests/unit/test_config.py checks that they are
what :func:`mlops.train.model.evaluate` and :func:`mlops.monitor.drift.performance` really compute.
"""

from __future__ import annotations

FAMILIES = ("hist_gradient_boosting", "random_forest", "logistic_regression")
"""Model families :func:`mlops.train.model.build_pipeline` can build."""

METRIC_NAMES = ("f1", "roc_auc", "pr_auc", "precision", "recall", "accuracy")
"""Validation metrics of a model (training and the evaluation gate), logged as ``val_<name>``: the same
names on every run so the MLflow UI compares them."""

REALISED_METRIC_NAMES = ("f1", "roc_auc", "precision", "recall", "accuracy")
"""Metrics the monitor computes on live labels as well: the primary metric must be one of them, since
the loop judges a champion's decay and its probation by it."""
