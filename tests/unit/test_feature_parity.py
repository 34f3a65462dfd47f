"""The pandas (batch) path and the streaming path compute identical features from the same events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.features.compute import FeatureSpec, features_frame, new_life, window_features
from mlops.features.state import DeviceWindows

SENSORS = ("pressure", "temperature", "vibration", "constant")
SPEC = FeatureSpec(sensors=SENSORS, window=5)
# History lengths per device: single reading, shorter than, equal to and longer than the window.
HISTORY_LENGTHS = {"dev-a": 1, "dev-b": 3, "dev-c": 5, "dev-d": 6, "dev-e": 40, "dev-f": 23}


def random_readings(seed: int = 7, lengths: dict[str, int] | None = None) -> pd.DataFrame:
    """Readings of several devices, interleaved in event time; dev-e has a maintenance (cycle reset).

    Sensor scales differ by orders of magnitude and one sensor is constant, as in C-MAPSS.
    """
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for d, (device, length) in enumerate(sorted((lengths or HISTORY_LENGTHS).items())):
        cycle = 0
        for i in range(length):
            cycle = 0 if (device == "dev-e" and i == 25) else cycle + 1  # dev-e starts a new life at i=25
            rows.append({
                "device_id": device,
                "device_type": "pump",
                # Distinct times across devices; jitter so devices interleave. Microseconds, as on
                # Kafka and in Spark and Parquet.
                "event_time": start + pd.Timedelta(seconds=60 * i + d, microseconds=int(rng.integers(0, 500_000))),
                "cycle": cycle,
                "pressure": float(rng.normal(1500.0, 3.0)),
                "temperature": float(rng.normal(640.0, 0.5) + 0.01 * i),
                "vibration": float(rng.exponential(0.02)),
                "constant": 518.67,
            })
    return pd.DataFrame(rows).sort_values("event_time", ignore_index=True)


def stream_features(readings: pd.DataFrame, batch_sizes: list[int]) -> pd.DataFrame:
    """Features from DeviceWindows, fed in event-time order in micro-batches of the given sizes."""
    windows = DeviceWindows(SPEC)
    events = [(r.device_id, {s: getattr(r, s) for s in SENSORS}, int(r.cycle))
              for r in readings.itertuples(index=False)]
    out, position, sizes = [], 0, iter(batch_sizes)
    while position < len(events):
        size = next(sizes)
        out.append(windows.update_and_compute(events[position:position + size]))
        position += size
    frame = pd.DataFrame(np.vstack(out), columns=SPEC.feature_names())
    return pd.concat([readings[["device_id", "event_time"]].reset_index(drop=True), frame], axis=1)


def assert_same_features(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Same rows (device_id, event_time) and bit-identical feature values."""
    key = ["device_id", "event_time"]
    left = left.sort_values(key, ignore_index=True)
    right = right.sort_values(key, ignore_index=True)
    assert len(left) == len(right)
    assert left["device_id"].tolist() == right["device_id"].tolist()
    assert (pd.to_datetime(left["event_time"], utc=True) == pd.to_datetime(right["event_time"], utc=True)).all()
    names = SPEC.feature_names()
    a, b = left[names].to_numpy(np.float64), right[names].to_numpy(np.float64)
    assert not np.isnan(a).any() and not np.isnan(b).any()
    np.testing.assert_array_equal(a, b)  # identical, not merely close: same kernel, same inputs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_event_by_event_equals_batch(seed: int) -> None:
    readings = random_readings(seed)
    batch = features_frame(readings, SPEC)
    stream = stream_features(readings, [1] * len(readings))
    assert_same_features(batch, stream)


@pytest.mark.parametrize("seed", [1, 2])
def test_stream_micro_batches_equal_batch(seed: int) -> None:
    readings = random_readings(seed)
    sizes = list(np.random.default_rng(seed).integers(1, 17, size=len(readings)))
    assert_same_features(features_frame(readings, SPEC), stream_features(readings, sizes))


def test_window_restarts_after_maintenance() -> None:
    readings = random_readings(4)
    batch = features_frame(readings, SPEC)
    dev_e = batch[batch["device_id"] == "dev-e"].sort_values("event_time")
    # Reading 25 starts a new life: its window holds only itself, then grows again.
    assert dev_e["n_readings"].tolist()[24:28] == [5.0, 1.0, 2.0, 3.0]
    assert new_life(np.array([1, 2, 3, 0, 1, 1])).tolist() == [True, False, False, True, False, True]


def test_constant_sensor_has_zero_std_and_slope() -> None:
    batch = features_frame(random_readings(5), SPEC)
    assert (batch["constant__std"] == 0.0).all()
    assert (batch["constant__slope"] == 0.0).all()
    assert (batch["constant__mean"] == 518.67).all()


def test_snapshot_restore_continues_identically() -> None:
    readings = random_readings(6)
    half = len(readings) // 2
    events = [(r.device_id, {s: getattr(r, s) for s in SENSORS}, int(r.cycle))
              for r in readings.itertuples(index=False)]
    first = DeviceWindows(SPEC)
    first.update_and_compute(events[:half])
    restored = DeviceWindows(SPEC)
    restored.restore(first.snapshot())
    np.testing.assert_array_equal(restored.update_and_compute(events[half:]), first.update_and_compute(events[half:]))


def one_reading_at_a_time(spec: FeatureSpec, batches: list[list[tuple]]) -> list[np.ndarray]:
    """The windows' features as the rule states them, reading by reading: a device's window is its
    last ``window`` readings since its cycle last failed to rise (a reading without a cycle never
    starts a life)."""
    lives: dict[object, list[list[float]]] = {}
    cycles: dict[object, int] = {}
    out = []
    for batch in batches:
        windows = []
        for device, sensors, *cycle in batch:
            given = cycle[0] if cycle else None
            if given is not None:
                if device in cycles and given <= cycles[device]:
                    lives[device] = []
                cycles[device] = given
            life = lives.setdefault(device, [])
            life.append([sensors[name] for name in spec.sensors])
            recent = life[-spec.window:]
            windows.append([[np.nan] * len(spec.sensors)] * (spec.window - len(recent)) + recent)
        out.append(window_features(np.array(windows)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_micro_batches_with_new_lives_and_missing_cycles_match_one_reading_at_a_time(seed: int) -> None:
    """Batches where a device starts new lives inside the batch, repeats, reports without a cycle, or
    shows up first with a reset: the vectorised windows match the rule applied reading by reading."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(("a", "b"), int(rng.integers(1, 6)))
    last_cycle: dict[int, int] = {}
    batches = []
    for _ in range(4):
        batch: list[tuple] = []
        for _ in range(int(rng.integers(1, 15))):
            device = int(rng.integers(0, 4))
            sensors = {"a": float(rng.normal()), "b": float(rng.normal())}
            step = int(rng.choice([1, 1, 1, 0, -2]))  # mostly rising; 0 or a fall starts a new life
            last_cycle[device] = last_cycle.get(device, 0) + step
            kind = rng.random()
            if kind < 0.15:
                batch.append((device, sensors))
            else:
                batch.append((device, sensors, None if kind < 0.25 else last_cycle[device]))
        batches.append(batch)
    state = DeviceWindows(spec)
    for batch, expected in zip(batches, one_reading_at_a_time(spec, batches), strict=True):
        np.testing.assert_array_equal(state.update_and_compute(batch), expected)


def test_known_values() -> None:
    """The kernel's numbers on a hand-checked window (guards against both paths being wrong alike)."""
    spec = FeatureSpec(sensors=("x",), window=3)
    readings = pd.DataFrame({"device_id": ["d"] * 4, "event_time": pd.date_range("2026-01-01", periods=4, freq="min"),
                             "x": [1.0, 2.0, 4.0, 8.0]})
    f = features_frame(readings, spec)
    assert f["x__mean"].tolist() == pytest.approx([1.0, 1.5, 7 / 3, 14 / 3])
    assert f["x__slope"].tolist() == pytest.approx([0.0, 1.0, 1.5, 3.0])
    assert f["x__last"].tolist() == [1.0, 2.0, 4.0, 8.0]
    assert f["x__std"].iloc[1] == pytest.approx(0.5)
    assert f["n_readings"].tolist() == [1.0, 2.0, 3.0, 3.0]


def test_the_kernel_computes_each_windows_statistics_as_numpy_does_one_window_at_a_time() -> None:
    rng = np.random.default_rng(11)
    windows = rng.normal(size=(400, 6, 3)) * 50 + 20
    windows[:, :, 2] = 7.0  # a constant sensor
    for i in range(len(windows)):
        windows[i, : rng.integers(0, 6)] = np.nan  # short windows are NaN-padded at the front
    features = window_features(windows)
    for window, row in zip(windows, features, strict=True):
        present = window[~np.isnan(window[:, 0])]
        positions = np.arange(len(present))
        for s in range(windows.shape[2]):
            values = present[:, s]
            slope = np.polyfit(positions, values, 1)[0] if len(values) > 1 else 0.0
            expected = [values.mean(), values.std(), slope, values[-1]]
            np.testing.assert_allclose(row[s * 4:s * 4 + 4], expected, rtol=1e-9, atol=1e-9)
        assert row[-1] == len(present)
        assert not np.signbit(row).any() or (row[np.signbit(row)] != 0).all(), "no negative zeros"
