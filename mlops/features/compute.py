"""The ONE implementation of feature computation, shared by Spark (batch) and the stream scorer.

Features of a reading are computed over the device's last ``window`` readings, the reading itself
included, in event-time order. For every sensor:

    <sensor>__mean, <sensor>__std (population), <sensor>__slope (least squares per reading),
    <sensor>__last

plus ``n_readings`` (how many readings the window holds, ≤ window). A window that is not full yet
(a new device, or one just after maintenance) uses what it has.

:func:`window_features` is the kernel: it takes a stack of windows, shape
``(n, window, n_sensors)``, NaN-padded at the front for short windows, and is vectorised over all
``n``. Batch code builds every window of a device's history and calls it once per device
(:func:`history_features`); the stream keeps the last ``window`` readings per device and calls it
once per micro-batch (:class:`~mlops.features.state.DeviceWindows`). Same kernel, same numbers;
``tests/unit/test_feature_parity.py`` guards that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["STATS", "FeatureSpec", "features_frame", "history_features", "infer_sensors", "new_life", "window_features"]

STATS = ("mean", "std", "slope", "last")


@dataclass(frozen=True)
class FeatureSpec:
    """Which sensors and how long a window: everything needed to reproduce a model's features."""

    sensors: tuple[str, ...]
    window: int

    def feature_names(self) -> list[str]:
        return [f"{s}__{stat}" for s in self.sensors for stat in STATS] + ["n_readings"]

    def to_dict(self) -> dict[str, object]:
        return {"sensors": list(self.sensors), "window": self.window}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureSpec:
        sensors = data["sensors"]
        assert isinstance(sensors, list)
        return cls(tuple(str(s) for s in sensors), int(str(data["window"])))


def window_features(windows: np.ndarray) -> np.ndarray:
    """Features of a stack of windows.

    ``windows`` has shape ``(n, window, n_sensors)``, oldest reading first, NaN rows at the front
    where a window is not full. Returns shape ``(n, n_sensors * 4 + 1)`` in the order of
    :meth:`FeatureSpec.feature_names`.
    """
    windows = np.asarray(windows, dtype=np.float64)
    n, _k, s = windows.shape
    present = ~np.isnan(windows[:, :, 0])  # a reading is present or absent as a whole
    count = present.sum(axis=1).astype(np.float64)  # (n,)
    safe_count = np.maximum(count, 1.0)[:, None]
    filled = np.where(present[:, :, None], windows, 0.0)
    # einsum sums over the window without the 3-D temporaries that sum(axis=1) of a product needs:
    # the same numbers, bit for bit, in well under half the time (the API's batches, the scorer).
    mean = np.einsum("nks->ns", filled) / safe_count
    centred = filled - mean[:, None, :]
    centred *= present[:, :, None]  # 0 where absent
    std = np.sqrt(np.einsum("nks,nks->ns", centred, centred) / safe_count)

    # Slope against the reading's position in the window (0 .. count-1), least squares.
    position = np.cumsum(present, axis=1).astype(np.float64) - 1.0  # (n, k)
    pos_mean = np.where(present, position, 0.0).sum(axis=1) / safe_count[:, 0]
    pos_centred = np.where(present, position - pos_mean[:, None], 0.0)
    denominator = (pos_centred**2).sum(axis=1)
    numerator = np.einsum("nk,nks->ns", pos_centred, centred)
    slope = np.where(denominator[:, None] > 0, numerator / np.where(denominator > 0, denominator, 1.0)[:, None], 0.0)

    last = windows[:, -1, :]  # the current reading is always present and always last

    features = np.empty((n, s * len(STATS) + 1))
    per_sensor = features[:, :-1].reshape(n, s, len(STATS))  # a view: <sensor>__<stat> in spec order
    per_sensor[:, :, 0], per_sensor[:, :, 1], per_sensor[:, :, 2], per_sensor[:, :, 3] = mean, std, slope, last
    features[:, -1] = count
    return features


def history_features(history: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features for every reading of ONE device's history (sorted by event time here).

    Where a ``cycle`` column is present, a reading whose cycle does not rise starts a new life
    (:func:`new_life`) and its window starts afresh, as the stream's does.
    Returns the identifying columns (device_id, event_time, cycle where present) and the
    feature columns, one row per reading.
    """
    # cycle breaks ties so that Spark (whose group order is arbitrary) sorts like the stream.
    order = ["event_time", "cycle"] if "cycle" in history.columns else ["event_time"]
    history = history.sort_values(order, kind="stable")
    values = history[list(spec.sensors)].to_numpy(dtype=np.float64)
    if "cycle" in history.columns:
        lives = np.cumsum(new_life(history["cycle"].to_numpy()))
    else:
        lives = np.zeros(len(history), dtype=np.int64)
    features = np.empty((len(history), len(spec.feature_names())))
    for life in np.unique(lives):  # a window never reaches back across a failure or maintenance
        rows = np.flatnonzero(lives == life)
        features[rows] = window_features(_history_windows(values[rows], spec.window))
    keys = [c for c in ("device_id", "device_type", "event_time", "cycle") if c in history.columns]
    out = history[keys].reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(features, columns=spec.feature_names())], axis=1)


def new_life(cycles: np.ndarray) -> np.ndarray:
    """True where a reading starts a new life: its cycle does not exceed the previous reading's.

    ``cycle`` counts readings since the last failure or maintenance, so it only rises within a
    life; the stream applies the same rule in :class:`~mlops.features.state.DeviceWindows`.
    """
    cycles = np.asarray(cycles)
    starts = np.ones(len(cycles), dtype=bool)
    starts[1:] = cycles[1:] <= cycles[:-1]
    return starts


def _history_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Every window of one life's readings, shape (n, window, n_sensors), NaN-padded at the front."""
    padded = np.vstack([np.full((window - 1, values.shape[1]), np.nan), values])
    return np.lib.stride_tricks.sliding_window_view(padded, (window, values.shape[1]))[:, 0]


def features_frame(readings: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features for many devices' readings (pandas, one process): groups by device_id."""
    if readings.empty:
        return pd.DataFrame(columns=["device_id", "event_time", *spec.feature_names()])
    parts = [history_features(group, spec) for _, group in readings.groupby("device_id", sort=True)]
    return pd.concat(parts, ignore_index=True)


def infer_sensors(columns: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """Sensor columns of a flat readings frame: everything that is not an id, time or setting."""
    fixed = {"device_id", "device_type", "event_time", "cycle", "schema_version", *exclude}
    return tuple(sorted(c for c in columns if c not in fixed and not c.startswith("setting")
                        and not c.startswith("_")))
