"""Simulator and replay into the real broker; records counted by an independent consumer."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.data.publish import publish
from mlops.data.replay import load_mapping, replay_events
from mlops.data.runs import latest_run, simulate
from mlops.data.scenarios import load_scenario
from mlops.data.schemas import Reading, parse_label, parse_reading
from mlops.data.simulator import Simulator
from tests.conftest import REPO, SHARED_DATA, unique

pytestmark = pytest.mark.integration


def topic_settings(services: Settings, tmp_path: Any) -> Settings:
    """The session's services with unique readings/labels topics and a private data dir."""
    topics = {"readings": unique("readings"), "labels": unique("labels")}
    settings = load_settings("local", overrides={
        **_base_overrides(services), "paths": {"data_dir": str(tmp_path)}, "kafka": {
            **_base_overrides(services)["kafka"], "topics": topics}})
    kafka.ensure_topics(settings.kafka, [spec for spec in kafka.design_topics(settings.kafka)
                                         if spec.name in topics.values()])
    return settings


def _base_overrides(services: Settings) -> dict[str, Any]:
    return {"kafka": {"bootstrap_servers": services.kafka.bootstrap_servers},
            "mlflow": {"tracking_uri": services.mlflow.tracking_uri}}


def consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[Any]:
    """Read a topic from the start with a fresh group until ``expected`` records or the deadline."""
    consumer = kafka.consumer(settings.kafka, unique("count"))
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                assert msg.error() is None, msg.error()
                records.append(msg)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        records += [m for m in consumer.consume(num_messages=5000, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    return records


def test_simulate_stationary_20000_readings(services: Settings, tmp_path: Any) -> None:
    settings = topic_settings(services, tmp_path)
    record = simulate(settings, load_scenario("stationary"), devices=20, seed=1, events=20_000)
    print("simulate throughput:", record["counts"])
    readings = consume_all(settings, settings.kafka.topics.readings, 20_000)
    assert len(readings) == 20_000
    assert all(m.key().decode() == parse_reading(m.value()).device_id for m in readings[:500])
    labels = consume_all(settings, settings.kafka.topics.labels, record["counts"]["labels"])
    assert len(labels) == record["counts"]["labels"] > 50
    assert {parse_label(m.value()).kind for m in labels} >= {"failure"}
    assert latest_run(settings) == record and record["onset"] is None


def test_simulate_records_the_onset_offsets(services: Settings, tmp_path: Any) -> None:
    settings = topic_settings(services, tmp_path)
    scenario = load_scenario("recalibration")
    assert scenario.drift is not None
    # Enough cycles to run 100 past the onset, wherever the scenario puts it.
    events = 4 * (scenario.drift.onset_cycle + 100)
    record = simulate(settings, scenario, devices=4, seed=1, events=events)
    onset = record["onset"]
    onset_time = datetime.fromisoformat(onset["event_time"])
    assert onset_time == scenario.start_time + timedelta(minutes=scenario.drift.onset_cycle)
    # The same seed replayed as a pure generator: the index of the first post-onset reading.
    sim = Simulator(scenario, devices=4, seed=1, cycle_seconds=60.0)
    generated = [e for e in sim.events(max_readings=events) if isinstance(e, Reading)]
    assert onset["reading_index"] == next(i for i, r in enumerate(generated) if r.event_time >= onset_time)
    readings = consume_all(settings, settings.kafka.topics.readings, events)
    for partition, offset in onset["partition_offsets"].items():
        mine = sorted((m for m in readings if m.partition() == int(partition)), key=lambda m: m.offset())
        first_after = next(m for m in mine if parse_reading(m.value()).event_time >= onset_time)
        assert first_after.offset() == offset
    assert str(onset["partition"]) in onset["partition_offsets"]
    saved = json.loads((settings.data_dir / "scenarios" / f"{record['run_id']}.json").read_text())
    assert saved["onset"]["offset"] == onset["offset"] >= 0


def test_replay_cmapss_train(services: Settings, tmp_path: Any) -> None:
    settings = topic_settings(services, tmp_path)
    mapping = load_mapping(REPO / "configs" / "replay" / "cmapss_fd001.yaml")
    report = publish(replay_events(SHARED_DATA / "cmapss" / "train_FD001.txt", mapping,
                                   settings.features.cycle_seconds), settings)
    print("replay throughput:", report.as_dict())
    readings = consume_all(settings, settings.kafka.topics.readings, 20_631)
    assert len(readings) == 20_631
    labels = consume_all(settings, settings.kafka.topics.labels, 100)
    assert Counter(parse_label(m.value()).kind for m in labels) == {"failure": 100}


def test_cli_replay_test_file_with_rul_labels(services: Settings, tmp_path: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.cli import app

    settings = topic_settings(services, tmp_path)
    monkeypatch.setenv("MLOPS_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("MLOPS_KAFKA__TOPICS__READINGS", settings.kafka.topics.readings)
    monkeypatch.setenv("MLOPS_KAFKA__TOPICS__LABELS", settings.kafka.topics.labels)
    result = CliRunner().invoke(app, ["replay", str(SHARED_DATA / "cmapss" / "test_FD001.txt"), "--mapping",
                                      str(REPO / "configs" / "replay" / "cmapss_fd001.yaml"),
                                      "--labels-from", "rul"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["readings"] == 13_096
    labels = consume_all(settings, settings.kafka.topics.labels, 100)
    assert len(labels) == 100 and {parse_label(m.value()).kind for m in labels} == {"rul"}
