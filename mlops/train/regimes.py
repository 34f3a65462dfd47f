"""Training rows after a drift: which rows each candidate learns from, and the one validation part all
of them are judged on.

A retraining told where the new regime began (``TrainRequest.reference_since``) does not bet on one
training window. Its candidates learn from several, and compete in the same search:

- ``regime``: the rows since the drift began, alone (right, but few: a first answer after hours);
- ``all``: every row of the window, the old regime included (many rows, some of them wrong now);
- ``recent``: every row, the old regime's weighted down by age before the drift, with a half-life
  equal to the drifted span in training (in between; rows weighing less than :data:`MIN_WEIGHT` are
  left out).

Every candidate is validated on the same rows: the latest ``validation_fraction`` of the rows since
the drift began. Validation on the whole window's latest quarter would judge a model for the new
regime mostly on the old one. The training part is every row before that cut, less the label
horizon ``gap`` (:mod:`mlops.train.split`). Which window wins is the search's verdict, recorded as
the chosen candidate's ``training_rows`` param and the ``lineage.training_rows`` tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from mlops.errors import TrainingError
from mlops.log import get_logger
from mlops.train.split import LABEL, Split, time_split

__all__ = ["ALL_ROWS", "MIN_WEIGHT", "TRAINING_ROWS", "RegimeSplit", "regime_split", "weighted_rate"]

log = get_logger(__name__)

ALL_ROWS = "all"
TRAINING_ROWS = ("regime", ALL_ROWS, "recent")
"""The training windows a drift retraining's candidates may learn from (``train.drift_training_rows``)."""
MIN_WEIGHT = 1e-3
"""Rows weighing less than this are left out of a fit (they would cost time and change nothing)."""


@dataclass(frozen=True)
class RegimeSplit:
    """One split, and per training window the weight of each training row (None: every row, weight 1)."""

    split: Split
    weights: dict[str, np.ndarray | None]
    regime_since: datetime | None
    """The drift's start the windows were cut at; None: one window of every row (no drift given)."""
    skipped: dict[str, str]
    """Windows left out, with the reason (too few positives since the drift, say)."""

    def tags(self) -> dict[str, str]:
        """Lineage tags: where the windows were cut, which competed and which were left out (and why)."""
        if self.regime_since is None:
            return {}
        tags = {"lineage.training_rows_since": self.regime_since.isoformat(),
                "lineage.training_rows_searched": ",".join(self.weights)}
        tags.update({f"lineage.training_rows_skipped.{name}": reason for name, reason in self.skipped.items()})
        return tags


def weighted_rate(labels: np.ndarray, weights: np.ndarray | None) -> float:
    """The positive rate of ``labels`` under ``weights`` (plain mean when None), of the rows a fit keeps
    (weights of at least :data:`MIN_WEIGHT`)."""
    if weights is None:
        return float(np.mean(labels)) if len(labels) else 0.0
    kept = np.where(weights >= MIN_WEIGHT, weights, 0.0)
    total = float(kept.sum())
    return float(np.dot(labels, kept) / total) if total > 0 else 0.0


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def regime_split(frame: pd.DataFrame, regime_since: datetime | None, validation_fraction: float, gap: timedelta,
                 *, min_positives: int, training_rows: Sequence[str]) -> RegimeSplit:
    """The split and training windows of ``frame`` (``event_time``, ``device_id``, ``label``).

    Without ``regime_since`` (or one not inside the frame's time span), or with only ``all`` asked
    for: the plain time split of :func:`time_split`, one window of every row. Otherwise the
    validation part is the latest ``validation_fraction`` of the rows since ``regime_since``; if
    those rows cannot make a validation part (too few positives), the plain split is used, logged.
    """
    unknown = [name for name in training_rows if name not in TRAINING_ROWS]
    if unknown or not training_rows:
        raise TrainingError(f"train.drift_training_rows {list(training_rows)}: expected some of "
                            f"{', '.join(TRAINING_ROWS)}")
    def plain() -> RegimeSplit:
        return RegimeSplit(time_split(frame, validation_fraction, gap, min_positives=min_positives),
                           {ALL_ROWS: None}, None, {})

    if regime_since is None or list(training_rows) == [ALL_ROWS]:
        return plain()
    since = _utc(regime_since)
    times = pd.to_datetime(frame["event_time"], utc=True)
    if not times.min() < since <= times.max():
        return plain()
    try:
        split = time_split(frame, validation_fraction, gap, min_positives=min_positives, cut_among=since)
    except TrainingError as err:
        log.warning("too few rows since the drift to validate on them; validating on the window's latest rows",
                    regime_since=since.isoformat(), reason=str(err).splitlines()[0])
        return plain()
    cut = _utc(split.cut)
    train = split.train
    train_times = pd.to_datetime(train["event_time"], utc=True)
    after = (train_times >= since).to_numpy()
    labels = train[LABEL].to_numpy(dtype=np.int64)
    weights: dict[str, np.ndarray | None] = {}
    skipped: dict[str, str] = {}
    for name in training_rows:
        if name == ALL_ROWS:
            weights[name] = None
        elif name == "regime":
            positives = int(labels[after].sum())
            if positives < min_positives or positives == int(after.sum()):
                skipped[name] = (f"{int(after.sum())} training rows since the drift, {positives} positive: need "
                                 f"{min_positives} positive and one negative")
            else:
                weights[name] = after.astype(np.float64)
        else:  # recent
            half_life = max((cut - gap - since) / timedelta(hours=1), 0.25)
            age_h = ((since - train_times) / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)
            weights[name] = np.where(after, 1.0, 0.5 ** (np.maximum(age_h, 0.0) / half_life))
    for name, reason in skipped.items():
        log.info("training window left out of the search", training_rows=name, reason=reason)
    if not weights:
        return plain()
    return RegimeSplit(split, weights, since.to_pydatetime(), skipped)
