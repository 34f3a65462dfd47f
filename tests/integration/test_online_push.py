"""The Feast online store follows the stream: the scorer scores, ``mlops features follow`` (its own
process) writes each device's latest features, and the REST API's device endpoint answers from them
(real Kafka, MLflow and Feast with the local provider).

Each test has a Feast repo of its own (a temporary data directory), so nothing touches the dev stack's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import TopicPartition
from fastapi.testclient import TestClient

from mlops import kafka
from mlops.config import Settings
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec
from mlops.features.online_push import OnlinePusher
from mlops.serve.api import create_app
from mlops.serve.scorer import Scorer
from mlops.testing import (
    SPEC,
    T0,
    CommittedReader,
    fleet_readings,
    produce_readings,
    reading,
    register_model,
    scorer_settings,
    settings_env,
    unique,
    wait_until,
)
from tests.conftest import REPO
from tests.integration.test_api import with_data_dir
from tests.integration.test_feast import settings_in
from tests.integration.test_scorer import _stop as stop_process
from tests.unit.test_online_push import add

pytestmark = pytest.mark.integration

DEVICES = 4


def last_predictions(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each device's prediction of its last reading (records that are no predictions are left out)."""
    last: dict[str, dict[str, Any]] = {}
    for p in sorted((r for r in records if "cycle" in r), key=lambda p: p["cycle"]):
        last[p["device_id"]] = p
    return last


def online_rows_are(reader: feast_repo.OnlineReader, expected: dict[str, dict[str, Any]]) -> bool:
    """Does the online store hold, for every device, the features of the reading ``expected`` names?"""
    try:
        found = {device: reader.read(SPEC, device) for device in expected}
    except Exception:  # the follower has not registered the feature view yet (the reader reopens the store)
        return False
    return all(f is not None and f.event_time == pd.Timestamp(expected[d]["event_time"])
               for d, f in found.items())


def assert_online_rows_match(reader: feast_repo.OnlineReader, expected: dict[str, dict[str, Any]]) -> None:
    names = SPEC.feature_names()
    for device, prediction in expected.items():
        found = reader.read(SPEC, device)
        assert found is not None
        np.testing.assert_array_equal(found.values[0], [prediction["features"][n] for n in names])


def produce_prediction(settings: Settings, value: bytes) -> None:
    producer = kafka.producer(settings.kafka)
    producer.produce(settings.kafka.topics.predictions, value=value, key=b"dev-000")
    assert producer.flush(30) == 0


def start_follower(settings: Settings, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "MLOPS_CONFIG_DIR": str(REPO / "configs"),
           "MLOPS_FEAST__PUSH_INTERVAL_S": "0.5"}
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "mlops", "features", "follow", "--group", group],
                                env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)


def committed_everything(settings: Settings, group: str) -> bool:
    """Has ``group`` committed the end of every predictions partition? The scorer's output ends with a
    transaction marker, which no consumer sees: a commit right before it is the end."""
    consumer = kafka.consumer(settings.kafka, group)  # never subscribes: only reads the group's offsets
    try:
        topic = settings.kafka.topics.predictions
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        committed = consumer.committed(partitions, timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in committed]
        return all(end == 0 or tp.offset >= end - 1 for tp, end in zip(committed, ends, strict=True))
    finally:
        consumer.close()


def test_follower_keeps_the_online_store_and_device_endpoint_on_the_scorers_last_predictions(
        services: Settings, tmp_path: Path) -> None:
    settings = with_data_dir(scorer_settings(services, unique("push"), batch_size=50), tmp_path)
    register_model(settings)
    readings = fleet_readings(devices=DEVICES, cycles=range(1, 31))  # several batches per device
    produce_readings(settings, readings)
    produce_prediction(settings, b'{"schema_version": 1, "device_id": "dev-000"}')  # malformed: skipped
    group, log = unique("follow"), tmp_path / "follow.log"
    follower = start_follower(settings, group, log)
    scorer, stop = Scorer(settings, group_id=unique("g")), threading.Event()
    thread = threading.Thread(target=scorer.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    reader = feast_repo.OnlineReader(settings)
    try:
        out.wait_for(len(readings) + 1, timeout_s=60, alive=thread.is_alive)
        expected = last_predictions(out.records)
        assert len(expected) == DEVICES
        wait_until(lambda: online_rows_are(reader, expected) or follower.poll() is not None, 150,
                   "each device's last reading online")
        assert follower.poll() is None, "the follower exited"
        assert_online_rows_match(reader, expected)

        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            wait_until(lambda: client.get("/readyz").status_code == 200, 60, "model loaded")
            for device, prediction in expected.items():
                answer = client.post(f"/v1/predict/device/{device}")
                assert answer.status_code == 200, answer.text
                assert abs(answer.json()["probability"] - prediction["probability"]) < 1e-12

            # One more reading of one device: its online row and the endpoint's answer move on.
            produce_readings(settings, [reading(0, 31)])
            out.wait_for(len(readings) + 2, timeout_s=30, alive=thread.is_alive)
            newest = last_predictions(out.records)["dev-000"]
            assert newest["cycle"] == 31
            wait_until(lambda: online_rows_are(reader, {"dev-000": newest}), 30, "the newest reading online")
            assert_online_rows_match(reader, {"dev-000": newest})
            answer = client.post("/v1/predict/device/dev-000")
            assert abs(answer.json()["probability"] - newest["probability"]) < 1e-12

        # SIGTERM: the follower writes and commits what it holds, then exits cleanly.
        stop_process(follower)
        assert follower.returncode == 0
        output = log.read_text()
        assert "malformed prediction skipped" in output and "1 malformed" in output, output[-3000:]
        assert committed_everything(settings, group)
    except AssertionError:
        print(log.read_text()[-5000:] if log.exists() else "no follower log")
        raise
    finally:
        stop_process(follower)
        stop.set()
        thread.join(90)
        out.close()
    assert not thread.is_alive()


def spec_is(spec: FeatureSpec) -> Any:
    return lambda _name, _version: spec


def test_a_failed_write_keeps_the_latest_rows_for_the_next_try(tmp_path: Path) -> None:
    """The repo directory cannot be created at first (a file is in the way), then it can."""
    settings = settings_in(tmp_path)
    blocker = settings.feast_repo_dir
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    pusher = OnlinePusher(settings, spec_is(SPEC))

    add(pusher, [(1, 1), (2, 1)])
    assert not pusher.flush() and pusher.counts.failures == 1
    assert pusher.pending_count() == 2  # kept
    add(pusher, [(1, 2)])  # arrives while the store is down: it replaces dev-001's kept row

    blocker.unlink()
    assert pusher.flush() and pusher.counts.pushed == 2 and pusher.counts.failures == 1
    reader = feast_repo.OnlineReader(settings)
    online = {d: reader.read(SPEC, d) for d in ("dev-001", "dev-002")}
    assert online["dev-001"] is not None and online["dev-001"].values[0, 0] == 1002.0
    assert online["dev-001"].event_time == T0 + timedelta(minutes=2)
    assert online["dev-002"] is not None and online["dev-002"].values[0, 0] == 2001.0


def test_a_view_of_other_features_is_left_alone(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    other = FeatureSpec(sensors=("s_9",), window=SPEC.window)
    feast_repo.apply(settings, other)  # the feature table's sensors are not the model's
    pusher = OnlinePusher(settings, spec_is(SPEC))

    add(pusher, [(1, 1)])
    assert pusher.flush()  # dropped on purpose: nothing waits, the input may be committed
    assert pusher.counts.dropped == 1 and pusher.counts.failures == 0 and pusher.counts.pushed == 0
    view = feast_repo.registered_view(feast_repo.open_store(settings))
    assert {f.name for f in view.features} == set(other.feature_names())  # not replaced
