"""The per-feature drift statistic, shared by the drift judge (:mod:`mlops.monitor.drift`) and the
calibration of its threshold (:mod:`mlops.monitor.calibration`), so both measure the same distance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mlops.errors import ValidationError

__all__ = ["DRIFT_METHOD", "drift_score"]

DRIFT_METHOD = "wasserstein"
"""Evidently's normed Wasserstein distance: the distance between the two distributions in units of
the reference's standard deviation. One method for every column, so a score means the same in
every window; Evidently's automatic choice would switch tests with the sample size."""


def drift_score(reference: pd.Series, current: pd.Series) -> float:
    """Evidently's normed Wasserstein distance of ``current`` from ``reference`` (NaN and inf dropped, as it does)."""
    from evidently.legacy.calculations.stattests import get_stattest  # heavy
    from evidently.legacy.core import ColumnType  # heavy

    ref = reference.replace([-np.inf, np.inf], np.nan).dropna()
    cur = current.replace([-np.inf, np.inf], np.nan).dropna()
    if ref.empty or cur.empty:
        raise ValidationError(f"column {current.name!r}: no finite values to compare")
    test = get_stattest(ref, cur, ColumnType.Numerical, DRIFT_METHOD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column (e.g. n_readings) makes scipy warn
        return float(test(ref, cur, ColumnType.Numerical, 0.0).drift_score)
