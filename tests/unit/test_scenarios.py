"""Every drift scenario hurts the static model: a scenario the old model survives tests nothing.

The static model is the product's: the product's feature kernel (:func:`features_frame`) and label
rule (:func:`label_readings`), the product's time split and model family (:func:`fit_and_score`,
threshold chosen for f1 on the validation part), trained on the demo's history of the stationary
fleet. Its served decisions (probability >= its own threshold) are scored on every labelled reading

* before the onset: from the end of the history to the onset;
* after the onset: the first ``HOURS_AFTER`` hours of event time past it;
* and, as the drift's own effect, against the stationary fleet over the same hours: with the same
  seed a scenario's fleet is the stationary one until its onset (checked here), so the stationary
  run is what the fleet would have done without the drift.

Each drift scenario must lower f1 by ``MIN_DROP`` relative on both counts, for seeds 1-3 and for a
linear and a tree model; the stationary fleet itself must not lose as much over the same hours.
The benchmark's C-MAPSS streams (``bench/loop_cmapss.py``: FD001 with an injected recalibration,
FD001 followed by FD002) are held to the same drop, for a model trained on their FD001 history, in
each of the fleets seeds 1-3 make of the same engines.
"""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from mlops.config import load_settings
from mlops.data.scenarios import available_scenarios, load_scenario
from mlops.data.schemas import Label, Reading
from mlops.data.simulator import Simulator
from mlops.evaluation.metrics import evaluate
from mlops.features.compute import FeatureSpec, features_frame, infer_sensors
from mlops.features.labels import label_readings
from mlops.train.model import Fitted, fit_and_score
from mlops.train.split import LABEL, time_split
from tests.conftest import REPO

SEEDS = (1, 2, 3)
MIN_DROP = 0.30
"""Issue 14: every drift scenario lowers the static model's f1 by at least 30 % relative."""
HOURS_AFTER = 12
"""Event time scored after the onset; the gradual drift reaches its full size 3 hours in."""
# One linear and one tree model of the product's families (50 trees keep the test fast).
FAMILIES: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 0.1},
    "random_forest": {"n_estimators": 50, "max_depth": 6, "min_samples_leaf": 5},
}
SETTINGS = load_settings("local")
DEVICES = SETTINGS.demo.devices
HISTORY_TICKS = SETTINGS.demo.history_readings // DEVICES
CYCLE_S = SETTINGS.features.cycle_seconds
DRIFT_SCENARIOS = tuple(name for name in available_scenarios() if load_scenario(name).drift is not None)


def _end_tick() -> int:
    onsets = [load_scenario(name).drift.onset_cycle for name in DRIFT_SCENARIOS]  # type: ignore[union-attr]
    return max(onsets) + round(HOURS_AFTER * 3600 / CYCLE_S)


@functools.cache
def _labelled(scenario: str, seed: int) -> pd.DataFrame:
    """Every labelled reading of the run with its features and its tick (cycles after the start)."""
    sc = load_scenario(scenario)
    sim = Simulator(sc, devices=DEVICES, seed=seed, cycle_seconds=CYCLE_S)
    events = list(sim.events(max_readings=DEVICES * _end_tick()))
    readings = pd.DataFrame([e.to_row() for e in events if isinstance(e, Reading)])
    labels = pd.DataFrame([e.to_row() for e in events if isinstance(e, Label)],
                          columns=["device_id", "event_time", "kind", "rul"])
    features = features_frame(readings, FeatureSpec(tuple(sc.sensors), SETTINGS.features.window))
    data = label_readings(features, labels, SETTINGS.features.horizon_cycles, CYCLE_S)
    tick = ((data["event_time"] - sc.start_time).dt.total_seconds() / CYCLE_S).round().astype(np.int64)
    return data.assign(tick=tick).sort_values(["tick", "device_id"], kind="stable").reset_index(drop=True)


def _feature_names() -> list[str]:
    return FeatureSpec(tuple(load_scenario("stationary").sensors), SETTINGS.features.window).feature_names()


@functools.cache
def _static_model(seed: int, family: str) -> Fitted:
    """The product's model trained on the stationary fleet's history, as the demo's initial model is."""
    history = _labelled("stationary", seed)
    history = history[history["tick"] < HISTORY_TICKS]
    split = time_split(history, SETTINGS.train.validation_fraction,
                       timedelta(seconds=SETTINGS.features.horizon_cycles * CYCLE_S),
                       min_positives=SETTINGS.train.min_positives)
    names = _feature_names()
    # One thread: OpenMP on a shared 2-core machine thrashes.
    with threadpool_limits(1):
        return fit_and_score(family, FAMILIES[family], split.train[names], split.train[LABEL].to_numpy(),
                             split.validation[names], split.validation[LABEL].to_numpy(),
                             seed=SETTINGS.train.seed, calibration=SETTINGS.train.calibration,
                             folds=SETTINGS.train.calibration_folds)


def _scores(model: Fitted, data: pd.DataFrame, since: int, until: int) -> dict[str, float]:
    """Metrics of the served decisions (the model's own threshold) on the readings of ticks [since, until)."""
    part = data[(data["tick"] >= since) & (data["tick"] < until)]
    with threadpool_limits(1):
        probability = model.pipeline.predict_proba(part[_feature_names()])[:, 1]
    return evaluate(part[LABEL].to_numpy(), probability, model.threshold)


def test_every_shipped_drift_scenario_is_guarded() -> None:
    kinds = {load_scenario(name).drift.kind for name in DRIFT_SCENARIOS}  # type: ignore[union-attr]
    assert kinds >= {"recalibration", "gradual_drift", "fault_mode"}  # sudden, gradual, concept


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", DRIFT_SCENARIOS)
def test_drift_lowers_the_static_models_f1_after_the_onset(scenario: str, seed: int) -> None:
    onset = load_scenario(scenario).drift.onset_cycle  # type: ignore[union-attr]
    end = onset + round(HOURS_AFTER * 3600 / CYCLE_S)
    drifted, stationary = _labelled(scenario, seed), _labelled("stationary", seed)
    # Until the onset the drifted fleet is the stationary one: the stationary run is the counterfactual.
    pd.testing.assert_frame_equal(drifted[drifted["tick"] < onset], stationary[stationary["tick"] < onset])
    for family in FAMILIES:
        model = _static_model(seed, family)
        before = _scores(model, drifted, HISTORY_TICKS, onset)
        after = _scores(model, drifted, onset, end)
        undrifted = _scores(model, stationary, onset, end)
        print(f"{scenario} seed {seed} {family} (threshold {model.threshold:.3f}): "
              f"f1 {before['f1']:.3f} before -> {after['f1']:.3f} after "
              f"({after['f1'] / before['f1'] - 1:+.0%}; stationary fleet {undrifted['f1']:.3f}), "
              f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
              f"(stationary {undrifted['accuracy']:.3f})")
        assert after["f1"] <= (1 - MIN_DROP) * before["f1"], \
            f"{scenario} seed {seed} {family}: f1 {before['f1']:.3f} -> {after['f1']:.3f} after the onset"
        assert after["f1"] <= (1 - MIN_DROP) * undrifted["f1"], \
            f"{scenario} seed {seed} {family}: f1 {after['f1']:.3f} against {undrifted['f1']:.3f} without the drift"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_stationary_fleet_does_not_lose_as_much(seed: int) -> None:
    """The control: the drop above is the drift's, not the passing of time's."""
    stationary = _labelled("stationary", seed)
    onset = min(load_scenario(name).drift.onset_cycle for name in DRIFT_SCENARIOS)  # type: ignore[union-attr]
    for family in FAMILIES:
        model = _static_model(seed, family)
        before = _scores(model, stationary, HISTORY_TICKS, onset)
        after = _scores(model, stationary, onset, _end_tick())
        print(f"stationary seed {seed} {family}: f1 {before['f1']:.3f} -> {after['f1']:.3f}, "
              f"accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
        assert after["f1"] > (1 - MIN_DROP) * before["f1"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stream_name", ["cmapss", "cmapss_fd002"])
def test_cmapss_drifts_lower_the_static_models_f1_after_the_onset(stream_name: str, seed: int) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from loop_cmapss import STREAMS
    finally:
        sys.path.remove(str(REPO / "bench"))
    stream = STREAMS[stream_name](SETTINGS, hours_after_onset=24.0, seed=seed)
    assert stream.onset is not None
    readings, labelled = stream.readings, stream.truth >= 0
    history = np.arange(len(readings)) < stream.history_readings
    # The training job's sensors: those that vary in its window (six are constant in FD001).
    sensors = [s for s in infer_sensors(list(readings.columns)) if readings.loc[history, s].std() > 1e-12]
    names = FeatureSpec(tuple(sensors), SETTINGS.features.window).feature_names()
    frame = pd.concat([readings[["device_id", "event_time"]], stream.features[names]], axis=1)
    frame = frame.assign(label=stream.truth, tick=np.arange(len(readings)))[labelled]
    split = time_split(frame[frame["tick"] < stream.history_readings], SETTINGS.train.validation_fraction,
                       timedelta(seconds=SETTINGS.features.horizon_cycles * CYCLE_S),
                       min_positives=SETTINGS.train.min_positives)
    for family in FAMILIES:
        with threadpool_limits(1):
            model = fit_and_score(family, FAMILIES[family], split.train[names], split.train[LABEL].to_numpy(),
                                  split.validation[names], split.validation[LABEL].to_numpy(),
                                  seed=SETTINGS.train.seed, calibration=SETTINGS.train.calibration,
                                  folds=SETTINGS.train.calibration_folds)
            probability = model.pipeline.predict_proba(frame[names])[:, 1]
        live = frame["tick"].to_numpy() >= stream.history_readings
        after = frame["tick"].to_numpy() >= stream.onset.reading
        before = evaluate(frame[LABEL].to_numpy()[live & ~after], probability[live & ~after], model.threshold)
        drifted = evaluate(frame[LABEL].to_numpy()[after], probability[after], model.threshold)
        print(f"{stream_name} seed {seed} {family} ({len(sensors)} sensors, threshold {model.threshold:.3f}): "
              f"f1 {before['f1']:.3f} before -> {drifted['f1']:.3f} after ({drifted['f1'] / before['f1'] - 1:+.0%}), "
              f"accuracy {before['accuracy']:.3f} -> {drifted['accuracy']:.3f}")
        assert drifted["f1"] <= (1 - MIN_DROP) * before["f1"], f"{stream_name} {family}"
