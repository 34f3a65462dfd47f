"""The simulator as a pure generator: determinism, wear/labels, drift that hurts an old model; replay mapping."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from mlops.data.publish import Pacer
from mlops.data.replay import load_mapping, replay_events
from mlops.data.scenarios import available_scenarios, load_scenario
from mlops.data.schemas import Label, Reading, encode, parse_label, parse_reading
from mlops.data.simulator import Simulator
from mlops.errors import ConfigError
from mlops.features.compute import FeatureSpec, features_frame
from mlops.features.labels import label_readings
from tests.conftest import REPO, SHARED_DATA

CYCLE_S = 60.0
H = 30
MAPPING = REPO / "configs" / "replay" / "cmapss_fd001.yaml"


def run(scenario: str, seed: int = 1, devices: int = 20, readings: int = 2000) -> list[Reading | Label]:
    sim = Simulator(load_scenario(scenario), devices=devices, seed=seed, cycle_seconds=CYCLE_S)
    return list(sim.events(max_readings=readings))


def test_scenarios_ship() -> None:
    assert set(available_scenarios()) >= {"stationary", "wear_regime", "recalibration", "fault_mode"}
    for name in available_scenarios():
        scenario = load_scenario(name)
        assert (scenario.drift is None) == (name == "stationary")


def test_same_seed_gives_byte_identical_events() -> None:
    first = [encode(e) for e in run("fault_mode", seed=7)]
    assert first == [encode(e) for e in run("fault_mode", seed=7)]
    assert first != [encode(e) for e in run("fault_mode", seed=8)]


def test_events_are_valid_and_bounded_and_labels_late() -> None:
    events = run("stationary", readings=20_000)
    readings = [e for e in events if isinstance(e, Reading)]
    labels = [e for e in events if isinstance(e, Label)]
    assert len(readings) == 20_000
    assert all(parse_reading(encode(e)) == e for e in readings[:2000])
    assert all(parse_label(encode(e)) == e for e in labels)
    assert {lab.kind for lab in labels} >= {"failure"}
    assert len(labels) > 50  # ~150-cycle lives: 20 devices x 1000 cycles fail many times
    # Readings come in event-time order; a label is published after readings 10 cycles past its time.
    times = [r.event_time for r in readings]
    assert times == sorted(times)
    # Late: a label goes out only once the clock reached its event time + 10 cycles, i.e. after every
    # reading up to the tick before that.
    delay = pd.Timedelta(seconds=10 * CYCLE_S)
    last_reading_time, drained = None, len(labels) - 20
    for event in events:
        if isinstance(event, Reading):
            last_reading_time = event.event_time
        elif drained > 0:  # the last labels are drained at the end of the run
            drained -= 1
            assert last_reading_time is not None
            assert last_reading_time + pd.Timedelta(seconds=CYCLE_S) >= event.event_time + delay


def test_failure_starts_a_new_life_and_wear_shifts_sensors() -> None:
    events = run("stationary", devices=5, readings=5000)
    frame = pd.DataFrame([e.to_row() for e in events if isinstance(e, Reading)])
    failure = next(e for e in events if isinstance(e, Label) and e.kind == "failure")
    device = frame[frame.device_id == failure.device_id].sort_values("event_time")
    after = device[device.event_time > failure.event_time]
    assert after.iloc[0].cycle == 0
    before = device[device.event_time < failure.event_time]
    # Wear heats and shakes the machine: the end of a life runs hotter than its start.
    assert before.vibration.iloc[-5:].mean() > after.vibration.iloc[:5].mean()


def test_onset_is_reported() -> None:
    sim = Simulator(load_scenario("recalibration"), devices=10, seed=1, cycle_seconds=CYCLE_S)
    onset = sim.onset
    assert onset is not None and onset.kind == "recalibration"
    assert onset.event_time == sim.start_time + pd.Timedelta(seconds=600 * CYCLE_S)
    assert Simulator(load_scenario("stationary"), 10, 1, CYCLE_S).onset is None


@functools.cache
def _f1_before_and_after(scenario: str) -> tuple[float, float]:
    """Train on pre-onset data (windowed features, as the product does), score before and after onset."""
    sc = load_scenario(scenario)
    onset, ramp = (sc.drift.onset_cycle, sc.drift.ramp_cycles) if sc.drift else (600, 0)
    events = run(scenario, devices=20, readings=20 * (onset + ramp + 300))
    readings = pd.DataFrame([e.to_row() for e in events if isinstance(e, Reading)])
    labels = pd.DataFrame([e.to_row() for e in events if isinstance(e, Label)])
    spec = FeatureSpec(tuple(sc.sensors), 10)
    features = features_frame(readings, spec)
    data = label_readings(features, labels, H, CYCLE_S)
    tick = (data.event_time - sc.start_time).dt.total_seconds() / CYCLE_S
    train, before, after = data[tick < onset * 2 / 3], data[(tick >= onset * 2 / 3) & (tick < onset)], \
        data[tick >= onset + ramp]
    # A tree model, like the product's; one thread, as OpenMP on a shared 2-core machine thrashes.
    with threadpool_limits(1):
        model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(train[spec.feature_names()],
                                                                                train.label)
    return tuple(float(f1_score(part.label, model.predict(part[spec.feature_names()])))  # type: ignore[return-value]
                 for part in (before, after))


@pytest.mark.parametrize("scenario", ["wear_regime", "recalibration", "fault_mode"])
def test_drift_degrades_a_model_trained_before_onset(scenario: str) -> None:
    before, after = _f1_before_and_after(scenario)
    print(f"{scenario}: f1 of a pre-onset model {before:.3f} before onset, {after:.3f} after")
    stationary_before, stationary_after = _f1_before_and_after("stationary")
    assert before > 0.5, f"{scenario}: the pre-onset model should be useful (f1 {before:.2f})"
    assert after < before - 0.15, f"{scenario}: f1 {before:.2f} -> {after:.2f} is not a noticeable drop"
    # Stationary data does not lose as much: the drop is the drift, not the passing of time.
    assert stationary_before - stationary_after < before - after


def test_scenario_validation_names_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("name: typo\nwear:\n  rate: 0.01\n  hazzard: {}\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert str(bad) in str(info.value) and "'wear.hazzard': unknown key" in str(info.value)
    bad.write_text("drift: {kind: recalibration, onset_cycle: 5, recalibration: {humidity: {offset: 1}}}\n")
    with pytest.raises(ConfigError, match=r"unknown sensor\(s\) \['humidity'\]"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="no file"):
        load_scenario("no-such-scenario")


def test_mapping_validation(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(MAPPING.read_text() + "sensor_units: {}\n")
    with pytest.raises(ConfigError, match="'sensor_units': unknown key"):
        load_mapping(bad)
    bad.write_text(MAPPING.read_text().replace("sensors: [s_1,", "sensors: [s_99, s_1,"))
    with pytest.raises(ConfigError, match=r"column\(s\) \['s_99'\]"):
        list(replay_events(SHARED_DATA / "cmapss" / "train_FD001.txt", load_mapping(bad), CYCLE_S))


def test_replay_cmapss_train_and_test_files() -> None:
    mapping = load_mapping(MAPPING)
    train = list(replay_events(SHARED_DATA / "cmapss" / "train_FD001.txt", mapping, CYCLE_S))
    readings = [e for e in train if isinstance(e, Reading)]
    failures = [e for e in train if isinstance(e, Label)]
    assert len(readings) == 20_631 and len(failures) == 100
    assert {f.kind for f in failures} == {"failure"}
    assert [r.event_time for r in readings] == sorted(r.event_time for r in readings)
    assert {r.sensors["s_1"] for r in readings} == {518.67}  # a constant column is still a sensor
    last = {r.device_id: r for r in readings}
    assert all(f.event_time == last[f.device_id].event_time for f in failures)
    assert last["cmapss-train_FD001-001"].cycle == 192

    test = list(replay_events(SHARED_DATA / "cmapss" / "test_FD001.txt", mapping, CYCLE_S, "rul"))
    rul = {e.device_id: e.rul for e in test if isinstance(e, Label)}
    assert sum(isinstance(e, Reading) for e in test) == 13_096 and len(rul) == 100
    expected = np.loadtxt(SHARED_DATA / "cmapss" / "RUL_FD001.txt")
    assert [rul[f"cmapss-test_FD001-{u:03d}"] for u in range(1, 101)] == expected.tolist()


def test_pacer_holds_the_rate_on_an_injected_clock() -> None:
    now = [0.0]
    pacer = Pacer(100.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(250):
        pacer.wait()
    assert now[0] == pytest.approx(2.5)
