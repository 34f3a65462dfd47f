"""Time-based split of a labelled training set: train on the earlier part, validate on the later part.

The cut is the event time below which ``1 - validation_fraction`` of the labelled rows lie. Rows in
the last ``gap`` (H cycles) before the cut are dropped from training: their label ("fails within
H") looks at what happens after the cut, so keeping them would leak the validation period's
failures into training. No random shuffling anywhere; the same rows always give the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from mlops.errors import TrainingError

__all__ = ["LABEL", "Split", "time_split"]

LABEL = "label"


@dataclass(frozen=True)
class Split:
    """The two parts, each sorted by (event_time, device_id), and where the cut fell."""

    train: pd.DataFrame
    validation: pd.DataFrame
    cut: datetime
    gap: timedelta

    def describe(self) -> dict[str, str]:
        return {
            "split.cut": self.cut.isoformat(),
            "split.gap_seconds": str(self.gap.total_seconds()),
            "split.train_rows": str(len(self.train)),
            "split.validation_rows": str(len(self.validation)),
            "split.train_positives": str(int(self.train[LABEL].sum())),
            "split.validation_positives": str(int(self.validation[LABEL].sum())),
        }


def time_split(frame: pd.DataFrame, validation_fraction: float, gap: timedelta, *, min_positives: int = 1,
               cut_among: pd.Timestamp | None = None) -> Split:
    """Split labelled rows (columns ``event_time``, ``device_id``, ``label``) by event time.

    ``cut_among``: validate on ``validation_fraction`` of the rows at or after this event time only
    (a drift's start: :mod:`mlops.train.regimes`); the training part is still every row before the cut.
    Raises TrainingError when either part is empty or lacks ``min_positives`` positives or any
    negative: such a model could neither be fitted nor validated honestly.
    """
    if frame.empty:
        raise TrainingError("no labelled rows to split")
    ordered = frame.sort_values(["event_time", "device_id"], kind="stable").reset_index(drop=True)
    times = ordered["event_time"]
    among = times if cut_among is None else times[pd.to_datetime(times, utc=True) >= cut_among]
    if among.empty:
        raise TrainingError(f"no labelled rows at or after {cut_among} to validate on")
    cut = among.iloc[min(len(among) - 1, int(len(among) * (1 - validation_fraction)))]
    train = ordered[times < cut - gap].reset_index(drop=True)
    validation = ordered[times >= cut].reset_index(drop=True)
    for name, part in (("training", train), ("validation", validation)):
        positives = int(part[LABEL].sum())
        if len(part) == 0 or positives < min_positives or positives == len(part):
            raise TrainingError(
                f"{name} part after the time cut at {cut.isoformat()} (gap {gap}) has {len(part)} rows, "
                f"{positives} positive: need at least {min_positives} positive and one negative; "
                "widen the training window"
            )
    return Split(train, validation, cut.to_pydatetime(), gap)
