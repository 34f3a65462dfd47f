"""Hot swap on the real broker and registry: a promotion reaches the stream; a broken model does not."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from mlops import kafka
from mlops.config import Settings
from mlops.data.schemas import ModelEvent
from mlops.features.compute import FeatureSpec
from mlops.features.state import DeviceWindows
from mlops.mlflow import tracking_client
from mlops.serve.scorer import Scorer
from mlops.testing import (
    SPEC,
    CommittedReader,
    fleet_readings,
    produce_readings,
    register_model,
    scorer_settings,
    unique,
)

pytestmark = pytest.mark.integration


def _start(settings: Settings) -> tuple[Scorer, threading.Event, threading.Thread]:
    scorer, stop = Scorer(settings, group_id=unique("g")), threading.Event()
    thread = threading.Thread(target=scorer.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    return scorer, stop, thread


def test_promotion_reaches_the_stream_within_10s_without_a_gap(services: Settings) -> None:
    # Registry polling is effectively off: the model event alone must trigger the swap.
    settings = scorer_settings(services, unique("swap"), batch_size=50, registry_poll_s=600)
    old = register_model(settings, seed=1)
    readings = fleet_readings(devices=8, cycles=range(1, 101))
    produce_readings(settings, readings[:200])
    scorer, stop, thread = _start(settings)
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    try:
        out.wait_for(200, timeout_s=120, alive=thread.is_alive)
        new = register_model(settings, seed=2)  # moves the alias
        promoted_at = time.time()
        events = kafka.producer(settings.kafka)
        events.produce(settings.kafka.topics.model_events, key=settings.mlflow.registered_model,
                       value=ModelEvent(settings.mlflow.registered_model, "promote", new, old, actor="test").encode())
        assert events.flush(10) == 0
        sent = 200
        while not any(p["model_version"] == new for p in out.records):  # keep the stream flowing
            assert time.time() - promoted_at < 10, "no prediction with the new version within 10 s"
            if sent < len(readings):
                produce_readings(settings, readings[sent:sent + 8])
                sent += 8
            out.poll(0.2)
        swapped_after = time.time() - promoted_at
        produce_readings(settings, readings[sent:])
        out.wait_for(len(readings), timeout_s=60, alive=thread.is_alive)
        assert swapped_after < 10
        assert len({(p["source"]["partition"], p["source"]["offset"]) for p in out.records}) == len(readings)
        # No gap and no going back: per partition, old-version predictions then new-version ones.
        versions = defaultdict(list)
        for p in sorted(out.records, key=lambda p: (p["source"]["partition"], p["source"]["offset"])):
            versions[p["source"]["partition"]].append(p["model_version"])
        for seq in versions.values():
            assert seq == sorted(seq, key=lambda v: v == new), seq
        assert scorer.metrics.value("mlops_scorer_model_version") == float(new)
    finally:
        stop.set()
        thread.join(60)
        out.close()


def test_a_model_that_fails_to_load_leaves_the_old_one_serving(services: Settings) -> None:
    # No event here: the registry poll (fallback) must find the promotion.
    settings = scorer_settings(services, unique("broken"), batch_size=50, registry_poll_s=1)
    good = register_model(settings, seed=1)
    readings = fleet_readings(devices=6, cycles=range(1, 41))
    produce_readings(settings, readings[:120])
    scorer, stop, thread = _start(settings)
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    try:
        out.wait_for(120, timeout_s=120, alive=thread.is_alive)
        bad = register_model(settings, seed=2, broken=True)
        deadline = time.monotonic() + 60
        while scorer.metrics.value("mlops_scorer_model_load_failures_total") < 1:
            assert time.monotonic() < deadline, "the broken version was never tried"
            out.poll(0.2)
        produce_readings(settings, readings[120:])
        out.wait_for(len(readings), timeout_s=60, alive=thread.is_alive)
        assert {p["model_version"] for p in out.records} == {good}
        assert thread.is_alive()
        assert tracking_client(settings).get_model_version_by_alias(
            settings.mlflow.registered_model, "champion").version == bad
    finally:
        stop.set()
        thread.join(60)
        out.close()


def test_a_swap_to_another_feature_spec_scores_each_reading_once(services: Settings) -> None:
    """A promotion to a model with another sensor set while the scorer holds a prefetched backlog.

    The swap rebuilds the windows by rewinding; no committed reading may be scored again, and the new
    model's features must equal those of a scorer that had run it from the start.
    """
    settings = scorer_settings(services, unique("respec"), batch_size=40, registry_poll_s=600)
    narrow = FeatureSpec(sensors=("s_2", "s_3"), window=SPEC.window)
    old = register_model(settings, narrow, seed=1)
    new = register_model(settings, SPEC, seed=2, alias=None)
    readings = fleet_readings(devices=8, cycles=range(1, 3001))  # 24,000 readings with s_2, s_3 and s_4
    produce_readings(settings, readings)  # a backlog: the consumer prefetches far past one batch
    scorer, stop, thread = _start(settings)
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    try:
        out.wait_for(200, timeout_s=120, alive=thread.is_alive)
        tracking_client(settings).set_registered_model_alias(
            settings.mlflow.registered_model, "champion", new)
        events = kafka.producer(settings.kafka)
        events.produce(settings.kafka.topics.model_events, key=settings.mlflow.registered_model,
                       value=ModelEvent(settings.mlflow.registered_model, "promote", new, old, actor="test").encode())
        assert events.flush(10) == 0
        deadline = time.monotonic() + 30
        while scorer.summary.model_version != new:
            assert time.monotonic() < deadline, "the new version never reached the scorer"
            out.poll(0.01)
        swapped_at = scorer.summary.processed
        assert swapped_at < len(readings), "the swap came after the backlog: nothing was in flight"
        deadline = time.monotonic() + 120
        while len({(p["source"]["partition"], p["source"]["offset"]) for p in out.records}) < len(readings):
            assert time.monotonic() < deadline and thread.is_alive(), scorer.summary
            out.poll(0.2)
    finally:
        stop.set()
        thread.join(60)
    try:
        out.drain()
    finally:
        out.close()

    by_source = defaultdict(list)
    for p in out.records:
        by_source[(p["source"]["partition"], p["source"]["offset"])].append(p)
    assert len(by_source) == len(readings)
    twice = {k: [p["model_version"] for p in v] for k, v in by_source.items() if len(v) > 1}
    assert not twice, f"{len(twice)} readings scored more than once, e.g. {list(twice.items())[:3]}"
    assert len(out.records) == len(readings)

    versions = defaultdict(list)
    for p in sorted(out.records, key=lambda p: (p["source"]["partition"], p["source"]["offset"])):
        versions[p["source"]["partition"]].append(p["model_version"])
    for seq in versions.values():
        assert seq == sorted(seq, key=lambda v: v == new), seq  # old version, then only the new one
    assert {p["model_version"] for p in out.records} == {old, new}

    # The features a scorer running the new model from the first reading would compute.
    expected = DeviceWindows(SPEC).update_and_compute(
        (r["device_id"], r["sensors"], r["cycle"]) for r in readings)
    index = {(r["device_id"], r["cycle"]): i for i, r in enumerate(readings)}
    names = SPEC.feature_names()
    swapped = [p for p in out.records if p["model_version"] == new]
    assert swapped
    for p in swapped:
        want = expected[index[(p["device_id"], p["cycle"])]]
        got = np.array([p["features"][n] for n in names])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"{p['device_id']} cycle {p['cycle']}")
