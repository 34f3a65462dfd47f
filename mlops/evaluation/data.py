"""Evaluation data from the lake: labelled features of readings newer than the models' training data.

``mlops promote`` and the loop's gate judge models on it: rows neither model learnt from, with the
features each computes and the label the late ground truth gave them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pandas as pd

from mlops.config import Settings
from mlops.data.lake import read_table
from mlops.errors import PolicyError
from mlops.evaluation.gate import Scorable
from mlops.features.compute import FeatureSpec, features_frame
from mlops.features.labels import label_readings
from mlops.lineage import TRAINED_UNTIL_TAGS

__all__ = ["lake_evaluation_data", "trained_until"]


def trained_until(tags: dict[str, str], where: str) -> datetime:
    """Up to which event time a version's training data reaches, from its lineage tags."""
    for key in TRAINED_UNTIL_TAGS:
        if tags.get(key):
            try:
                moment = pd.Timestamp(tags[key])
            except ValueError as err:
                raise PolicyError(f"{where}: tag {key}={tags[key]!r} is not a timestamp") from err
            return (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")).to_pydatetime()
    raise PolicyError(f"{where}: no lineage tag ({' / '.join(TRAINED_UNTIL_TAGS)}) says how recent its training "
                      "data is, so no evaluation data can be chosen that it was not trained on; "
                      "use --force to promote without the gate")


def lake_evaluation_data(settings: Settings, models: Sequence[Scorable], since: datetime) -> pd.DataFrame:
    """Labelled features from the lake for readings after ``since``, for every model's features.

    Readings from one window before ``since`` are read too, so the first evaluated readings have
    full windows, exactly as they had when they were scored.
    """
    windows = {m.spec.window for m in models}
    if len(windows) != 1:
        raise PolicyError(f"the models use different feature windows {sorted(windows)}; evaluate them on "
                          "data you supply (the loop does) or use --force")
    window = windows.pop()
    sensors = tuple(sorted({s for m in models for s in m.spec.sensors}))
    start = since - timedelta(seconds=window * settings.features.cycle_seconds)
    readings = read_table(settings, "readings", since=start)
    if readings.empty:
        raise PolicyError(f"no evaluation data: the lake holds no readings since {since.isoformat()} "
                          "(newer than the models' training data)")
    missing = [s for s in sensors if s not in readings.columns]
    if missing:
        raise PolicyError(f"no evaluation data: lake readings lack sensor column(s) {missing}")
    # Like the scorer, which dead-letters them: readings without the models' sensors (another fleet's) are not
    # the models' to judge.
    readings = readings.dropna(subset=list(sensors)).reset_index(drop=True)
    if readings.empty:
        raise PolicyError(f"no evaluation data: no lake reading since {since.isoformat()} has the models' sensors "
                          f"{list(sensors)}")
    labels = read_table(settings, "labels", since=start)
    features = features_frame(readings, FeatureSpec(sensors, window))
    labelled = label_readings(features, labels, settings.features.horizon_cycles, settings.features.cycle_seconds)
    fresh = labelled[pd.to_datetime(labelled["event_time"], utc=True) > pd.Timestamp(since)]
    if fresh.empty:
        raise PolicyError(f"no evaluation data: no labelled readings since {since.isoformat()} yet "
                          "(labels arrive late; wait or use --force)")
    return fresh.reset_index(drop=True)
