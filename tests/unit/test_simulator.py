"""The simulator as a pure generator: determinism, wear/labels, drift onsets and ramps; replay mapping.

That every drift scenario hurts a model trained before it is tests/unit/test_scenarios.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.data.publish import Pacer
from mlops.data.replay import load_mapping, replay_events
from mlops.data.scenarios import available_scenarios, load_scenario
from mlops.data.schemas import Label, Reading, encode, parse_label, parse_reading
from mlops.data.simulator import Simulator
from mlops.errors import ConfigError
from tests.conftest import REPO, SHARED_DATA

CYCLE_S = 60.0
H = 30
MAPPING = REPO / "configs" / "replay" / "cmapss_fd001.yaml"


def run(scenario: str, seed: int = 1, devices: int = 20, readings: int = 2000) -> list[Reading | Label]:
    sim = Simulator(load_scenario(scenario), devices=devices, seed=seed, cycle_seconds=CYCLE_S)
    return list(sim.events(max_readings=readings))


def test_scenarios_ship() -> None:
    assert set(available_scenarios()) >= {"stationary", "recalibration", "gradual_drift", "fault_mode"}
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
    assert onset.event_time == sim.start_time + pd.Timedelta(seconds=1800 * CYCLE_S)
    assert Simulator(load_scenario("stationary"), 10, 1, CYCLE_S).onset is None


def test_gradual_drift_ramps_the_recalibration_in_linearly() -> None:
    """Same seed, same fleet: the gradual drift's readings are the stationary ones, recalibrated by a
    share of the full offset and gain that grows from 1/ramp at the onset to all of it."""
    drift = load_scenario("gradual_drift").drift
    assert drift is not None and drift.recalibration_ramp_cycles > 0
    ramp, onset = drift.recalibration_ramp_cycles, drift.onset_cycle
    ticks = onset + ramp + 20
    frames = [pd.DataFrame([e.to_row() for e in run(name, devices=4, readings=4 * ticks) if isinstance(e, Reading)])
              for name in ("stationary", "gradual_drift")]
    stationary, drifted = frames
    tick = ((stationary.event_time - stationary.event_time.min()).dt.total_seconds() / CYCLE_S).round()
    progress = np.clip((tick - onset + 1) / ramp, 0.0, 1.0).to_numpy()
    for sensor, recal in drift.recalibration.items():
        expected = stationary[sensor] * (1 + (recal.scale - 1) * progress) + recal.offset * progress
        np.testing.assert_allclose(drifted[sensor], expected, atol=1e-3)  # readings are rounded to 4 places
    untouched = [s for s in load_scenario("stationary").sensors if s not in drift.recalibration]
    pd.testing.assert_frame_equal(drifted[untouched], stationary[untouched])
    assert (progress[tick < onset] == 0).all() and progress[-1] == 1.0


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
