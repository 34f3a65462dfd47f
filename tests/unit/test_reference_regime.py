"""The drift reference of a retrained model is drawn from the regime it must serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from mlops.train.job import REFERENCE_MIN_ROWS, _regime

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def part(start: int, rows: int) -> pd.DataFrame:
    minutes = np.arange(start, start + rows)
    return pd.DataFrame({"event_time": [T0 + timedelta(minutes=int(m)) for m in minutes],
                         "device_id": "d1", "x": minutes.astype(float), "label": minutes % 2})


def test_without_a_regime_start_the_reference_is_the_training_part() -> None:
    train, validation = part(0, 600), part(600, 300)
    rows = _regime(train, validation, None, ["x"])
    assert list(rows.columns) == ["x", "label", "event_time"] and len(rows) == 600 and rows["x"].max() == 599


def test_after_a_drift_the_reference_is_the_new_regime_validation_rows_included() -> None:
    train, validation = part(0, 600), part(600, 300)
    rows = _regime(train, validation, T0 + timedelta(minutes=500), ["x"])
    assert rows["x"].min() == 500 and rows["x"].max() == 899 and len(rows) == 400
    assert rows["label"].tolist() == [m % 2 for m in range(500, 900)]


def test_too_little_of_the_new_regime_falls_back_to_the_training_part() -> None:
    train, validation = part(0, 600), part(600, 300)
    since = T0 + timedelta(minutes=900 - REFERENCE_MIN_ROWS + 1)
    assert len(_regime(train, validation, since, ["x"])) == 600
