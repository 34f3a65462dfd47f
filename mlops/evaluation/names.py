"""Metric names the configuration may use, importable without scikit-learn.

The settings check ``policy.primary_metric`` and ``policy.guard_metrics`` against these when they
load (:mod:`mlops.config`); tests/unit/test_config.py checks that they are what
:func:`mlops.evaluation.metrics.evaluate` and :func:`mlops.monitor.drift.performance` really compute.
"""

from __future__ import annotations

__all__ = ["METRIC_NAMES", "REALISED_METRIC_NAMES"]

METRIC_NAMES = ("f1", "roc_auc", "pr_auc", "precision", "recall", "accuracy")
"""Validation metrics of a model (training and the evaluation gate), logged as ``val_<name>``: the same
names on every run so the MLflow UI compares them."""

REALISED_METRIC_NAMES = ("f1", "roc_auc", "precision", "recall", "accuracy")
"""Metrics the monitor computes on live labels as well: the primary metric must be one of them, since
the loop judges a champion's decay and its probation by it."""
