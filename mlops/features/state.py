"""Per-device streaming feature state: the last ``window`` readings of every device.

The scorer feeds a micro-batch of readings through :meth:`DeviceWindows.update_and_compute`,
which appends each reading to its device's window and computes the features of all of them with
the same kernel the batch path uses (:func:`mlops.features.compute.window_features`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from mlops.features.compute import FeatureSpec, window_features


class DeviceWindows:
    """The last ``spec.window`` sensor vectors per device, in arrival (event-time) order."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._windows: dict[str, deque[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def vector(self, sensors: Mapping[str, float]) -> np.ndarray:
        """The reading's sensor values in the spec's order; KeyError names a missing sensor."""
        return np.array([float(sensors[name]) for name in self.spec.sensors], dtype=np.float64)

    def push(self, device_id: str, sensors: Mapping[str, float]) -> np.ndarray:
        """Append one reading; return its window, shape (window, n_sensors), NaN-padded at the front."""
        window = self._windows.setdefault(device_id, deque(maxlen=self.spec.window))
        window.append(self.vector(sensors))
        stacked = np.full((self.spec.window, len(self.spec.sensors)), np.nan)
        stacked[self.spec.window - len(window):] = np.stack(window)
        return stacked

    def update_and_compute(self, readings: Iterable[tuple[str, Mapping[str, float]]]) -> np.ndarray:
        """Push every (device_id, sensors) in order; return their features, one row per reading."""
        windows = [self.push(device_id, sensors) for device_id, sensors in readings]
        if not windows:
            return np.empty((0, len(self.spec.feature_names())))
        return window_features(np.stack(windows))

    def reset(self, device_id: str) -> None:
        """Forget a device's history (after maintenance or a failure the window starts afresh)."""
        self._windows.pop(device_id, None)

    def snapshot(self) -> dict[str, list[list[float]]]:
        return {device: [v.tolist() for v in window] for device, window in self._windows.items()}

    def restore(self, snapshot: Mapping[str, list[list[float]]]) -> None:
        self._windows = {
            device: deque((np.asarray(v, dtype=np.float64) for v in rows), maxlen=self.spec.window)
            for device, rows in snapshot.items()
        }
