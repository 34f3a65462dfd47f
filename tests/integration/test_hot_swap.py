"""Hot swap on the real broker and registry: a promotion reaches the stream; a broken model does not."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from mlflow import MlflowClient

from mlops import kafka
from mlops.config import Settings
from mlops.registry.events import ModelEvent
from mlops.serve.scorer import Scorer
from tests.conftest import unique
from tests.helpers_models import CommittedReader, fleet_readings, produce_readings, register_model, scorer_settings

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
        assert MlflowClient(settings.mlflow.tracking_uri).get_model_version_by_alias(
            settings.mlflow.registered_model, "champion").version == bad
    finally:
        stop.set()
        thread.join(60)
        out.close()
