"""Per-device streaming feature state: what the next reading of every device needs for its window.

The scorer feeds a micro-batch of readings through :meth:`DeviceWindows.update_and_compute`, which
computes the features of all of them with the same kernel the batch path uses
(:func:`mlops.features.compute.window_features`) and keeps, per device, the last ``window - 1``
sensor vectors: the rest of the next reading's window.

The batch is processed per device, not per reading: a device's new readings are appended to its
kept rows and the windows of the whole batch are cut in one vectorised step. That keeps Python
work per reading to a dictionary look-up, which is what lets the scorer keep up with a fleet.

A reading may carry its ``cycle``: when the cycle does not rise, the device has started a new
life (failure or maintenance) and its window starts afresh, exactly as the batch path segments a
history (:func:`mlops.features.compute.new_life`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from mlops.features.compute import FeatureSpec, window_features

__all__ = ["DeviceWindows", "StreamReading"]

StreamReading = tuple[Hashable, Mapping[str, float]] | tuple[Hashable, Mapping[str, float], int]
"""``(device_id, sensors)`` or ``(device_id, sensors, cycle)``; any hashable key names a device
(the API keys each request's devices apart: one request's readings are never another's history)."""


class DeviceWindows:
    """The last ``spec.window - 1`` sensor vectors per device, in arrival (event-time) order."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._kept = max(spec.window - 1, 0)
        self._recent: dict[Hashable, np.ndarray] = {}
        self._cycles: dict[Hashable, int] = {}
        pick = itemgetter(*spec.sensors)
        # itemgetter of one name returns the value itself, not a 1-tuple.
        self._pick = pick if len(spec.sensors) > 1 else (lambda sensors: (pick(sensors),))

    def __len__(self) -> int:
        return len(self._recent)

    def update_and_compute(self, readings: Iterable[StreamReading]) -> np.ndarray:
        """Append every ``(device_id, sensors[, cycle])`` in order; return their features, one row per reading.

        A reading that lacks a sensor of the spec raises KeyError naming it, before any state changes.
        """
        readings = list(readings)
        if not readings:
            return np.empty((0, len(self.spec.feature_names())))
        return window_features(self._advance(readings, keep_windows=True))

    def update(self, readings: Iterable[StreamReading]) -> None:
        """Append readings without computing features (rebuilding state from a replay)."""
        readings = list(readings)
        if readings:
            self._advance(readings, keep_windows=False)

    def reset(self, device_id: Hashable) -> None:
        """Forget a device's history (after maintenance or a failure the window starts afresh)."""
        self._recent.pop(device_id, None)
        self._cycles.pop(device_id, None)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state: ``{"windows": {device: rows}, "cycles": {device: last cycle}}``."""
        return {
            "windows": {device: rows.tolist() for device, rows in self._recent.items()},
            "cycles": dict(self._cycles),
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (a bare ``{device: rows}`` mapping is accepted too)."""
        windows = snapshot["windows"] if "windows" in snapshot and "cycles" in snapshot else snapshot
        cycles = snapshot["cycles"] if windows is not snapshot else {}
        width = len(self.spec.sensors)
        self._recent = {device: self._tail(np.asarray(rows, dtype=np.float64).reshape(-1, width))
                        for device, rows in windows.items()}
        self._cycles = {device: int(cycle) for device, cycle in cycles.items()}

    # -- internals ---------------------------------------------------------------------------
    def _advance(self, readings: Sequence[StreamReading], keep_windows: bool) -> np.ndarray:
        """Append the readings per device; with ``keep_windows``, return their windows in input order.

        All windows of the batch are cut from one array in a single indexing step: per device (and
        life) it holds NaN padding, the kept rows, then the new rows, so every new row is preceded by
        exactly ``window - 1`` rows (NaN where the device has no history yet).
        """
        try:
            values = np.array([self._pick(reading[1]) for reading in readings], dtype=np.float64)
        except KeyError as err:
            raise KeyError(f"sensor {err.args[0]!r} is missing") from None
        rows_of: dict[Hashable, list[int]] = {}
        for row, reading in enumerate(readings):
            rows_of.setdefault(reading[0], []).append(row)
        pad = np.full((self._kept, values.shape[1]), np.nan)
        pieces: list[np.ndarray] = []
        ends = np.empty(len(readings), dtype=np.intp)  # where each reading lands in the joined array
        spans: dict[Hashable, tuple[int, int]] = {}  # device -> its real rows in the joined array
        size = 0
        for device, rows in rows_of.items():
            for life_rows, continues in self._lives(device, readings, rows):
                kept = self._recent.get(device) if continues else None
                held = 0 if kept is None else len(kept)
                pieces.append(pad[held:])
                if kept is not None:
                    pieces.append(kept)
                pieces.append(values[life_rows])
                first = size + self._kept
                ends[life_rows] = np.arange(first, first + len(life_rows))
                size = first + len(life_rows)
                spans[device] = (first - held, size)
        joined = np.concatenate(pieces)
        for device, (start, stop) in spans.items():
            self._recent[device] = joined[max(start, stop - self._kept):stop].copy()
        if not keep_windows:
            return np.empty((0, self.spec.window, values.shape[1]))
        return joined[ends[:, None] + np.arange(1 - self.spec.window, 1)]

    def _lives(self, device: Hashable, readings: Sequence[StreamReading], rows: list[int],
               ) -> list[tuple[list[int], bool]]:
        """Split one device's rows where a new life starts; the flag says whether a part continues the kept rows."""
        parts: list[tuple[list[int], bool]] = [([], True)]
        previous = self._cycles.get(device)
        for row in rows:
            reading = readings[row]
            cycle = reading[2] if len(reading) > 2 else None  # type: ignore[misc]
            if cycle is not None:
                if previous is not None and cycle <= previous:
                    parts.append(([], False))
                previous = cycle
            parts[-1][0].append(row)
        if previous is not None:
            self._cycles[device] = previous
        return [part for part in parts if part[0]]

    def _tail(self, rows: np.ndarray) -> np.ndarray:
        return rows[max(len(rows) - self._kept, 0):]
