"""`mlops status` on the real broker and MLflow server: the champion, the scorer group's lag, the decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from confluent_kafka import TopicPartition

from mlops import kafka, store
from mlops.status import gather
from mlops.testing import fleet_readings, produce_readings, register_model, scorer_settings, settings_env, unique

pytestmark = pytest.mark.integration


def test_status_shows_the_champion_the_lag_and_the_decisions(services) -> None:  # type: ignore[no-untyped-def]
    tag = unique("status")
    settings = scorer_settings(services, tag)
    group = f"scorer-{tag}"
    version = register_model(settings)
    produce_readings(settings, fleet_readings(4, range(25)))  # 100 readings, keyed by device
    store.record_event(settings, "promotion", model_name=settings.mlflow.registered_model, model_version=version,
                       actor="alice", reason="first model")

    before = gather(settings, group=group)

    assert all(row["ready"] for row in before["services"]), before["services"]
    assert before["champion"]["version"] == version and before["champion"]["trigger"] == "manual", before["champion"]
    assert "error" not in before["scorer"], before["scorer"]
    assert before["scorer"]["total_lag"] == 100 and before["scorer"]["started"] is False, before["scorer"]
    assert [(d["kind"], d["actor"]) for d in before["decisions"]["newest"]] == [("promotion", "alice")]

    # The group commits one partition to its end: that partition's readings leave the lag.
    topic = settings.kafka.topics.readings
    consumer = kafka.consumer(settings.kafka, group)
    try:
        done = max(before["scorer"]["lag"], key=lambda p: before["scorer"]["lag"][p])
        high = consumer.get_watermark_offsets(TopicPartition(topic, int(done)), timeout=10)[1]
        consumer.commit(offsets=[TopicPartition(topic, int(done), high)], asynchronous=False)
    finally:
        consumer.close()
    after = gather(settings, group=group)["scorer"]
    assert after["started"] is True and after["lag"][done] == 0
    assert after["total_lag"] == 100 - before["scorer"]["lag"][done], after

    shown = subprocess.run([sys.executable, "-m", "mlops", "status", "--json"], capture_output=True, text=True,
                           env={**os.environ, **settings_env(settings)}, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["champion"]["version"] == version
