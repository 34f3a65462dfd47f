"""Per-device streaming feature state: the last ``window`` readings of every device.

The scorer feeds a micro-batch of readings through :meth:`DeviceWindows.update_and_compute`,
which appends each reading to its device's window and computes the features of all of them with
the same kernel the batch path uses (:func:`mlops.features.compute.window_features`).

A reading may carry its ``cycle``: when the cycle does not rise, the device has started a new
life (failure or maintenance) and its window starts afresh, exactly as the batch path segments a
history (:func:`mlops.features.compute.new_life`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlops.features.compute import FeatureSpec, window_features

StreamReading = tuple[str, Mapping[str, float]] | tuple[str, Mapping[str, float], int]
"""``(device_id, sensors)`` or ``(device_id, sensors, cycle)``."""


class DeviceWindows:
    """The last ``spec.window`` sensor vectors per device, in arrival (event-time) order."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._windows: dict[str, deque[np.ndarray]] = {}
        self._cycles: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def vector(self, sensors: Mapping[str, float]) -> np.ndarray:
        """The reading's sensor values in the spec's order; KeyError names a missing sensor."""
        return np.array([float(sensors[name]) for name in self.spec.sensors], dtype=np.float64)

    def push(self, device_id: str, sensors: Mapping[str, float], cycle: int | None = None) -> np.ndarray:
        """Append one reading; return its window, shape (window, n_sensors), NaN-padded at the front.

        With ``cycle``, a cycle that does not exceed the device's previous one starts a new life.
        """
        vector = self.vector(sensors)  # before touching state: a bad reading changes nothing
        if cycle is not None:
            previous = self._cycles.get(device_id)
            if previous is not None and cycle <= previous:
                self._windows.pop(device_id, None)
            self._cycles[device_id] = cycle
        window = self._windows.setdefault(device_id, deque(maxlen=self.spec.window))
        window.append(vector)
        stacked = np.full((self.spec.window, len(self.spec.sensors)), np.nan)
        stacked[self.spec.window - len(window):] = np.stack(window)
        return stacked

    def update_and_compute(self, readings: Iterable[StreamReading]) -> np.ndarray:
        """Push every ``(device_id, sensors[, cycle])`` in order; return their features, one row per reading."""
        windows = [self.push(*reading) for reading in readings]
        if not windows:
            return np.empty((0, len(self.spec.feature_names())))
        return window_features(np.stack(windows))

    def reset(self, device_id: str) -> None:
        """Forget a device's history (after maintenance or a failure the window starts afresh)."""
        self._windows.pop(device_id, None)
        self._cycles.pop(device_id, None)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state: ``{"windows": {device: rows}, "cycles": {device: last cycle}}``."""
        return {
            "windows": {device: [v.tolist() for v in window] for device, window in self._windows.items()},
            "cycles": dict(self._cycles),
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (a bare ``{device: rows}`` mapping is accepted too)."""
        windows = snapshot["windows"] if "windows" in snapshot and "cycles" in snapshot else snapshot
        cycles = snapshot["cycles"] if windows is not snapshot else {}
        self._windows = {
            device: deque((np.asarray(v, dtype=np.float64) for v in rows), maxlen=self.spec.window)
            for device, rows in windows.items()
        }
        self._cycles = {device: int(cycle) for device, cycle in cycles.items()}
