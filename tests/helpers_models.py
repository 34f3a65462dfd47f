"""Test stand-ins for the training job and the device fleet.

``register_model`` trains a tiny sklearn pipeline on a FeatureSpec's feature names and registers
it in the real MLflow registry with the contract's tags (docs/contracts.md), optionally moving
the ``champion`` alias to it. ``reading_bytes`` makes deterministic readings for a small fleet.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings, load_settings
from mlops.features.compute import FeatureSpec

SPEC = FeatureSpec(sensors=("s_2", "s_3", "s_4"), window=5)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def register_model(settings: Settings, spec: FeatureSpec = SPEC, *, seed: int = 0, threshold: float = 0.5,
                   broken: bool = False, alias: str | None = "champion") -> str:
    """Train, log and register a model; return its version. ``broken``: trained on other columns,
    so it loads but fails the smoke test (predict_proba raises on the contract's columns)."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    names = spec.feature_names()
    if broken:
        names = [f"{n}__other" for n in names]
    x = pd.DataFrame(rng.normal(size=(200, len(names))), columns=names)
    y = (x.iloc[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.mlflow.experiment)
    name = settings.mlflow.registered_model
    tags = {"feature_spec": json.dumps(spec.to_dict()), "decision_threshold": str(threshold),
            "trigger": "manual", "reason": "test model", "git_commit": "test"}
    with mlflow.start_run() as run:
        mlflow.set_tags(tags)
        # Explicit requirements: inferring them starts a subprocess that imports the model (slow).
        info = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=name,
                                        pip_requirements=["scikit-learn"], serialization_format="pickle")
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    assert run.info.run_id
    return version


def scorer_settings(services: Settings, tag: str, **scorer: Any) -> Settings:
    """Settings on the test services with unique topics and model name (``tag`` makes them unique)."""
    overrides = {
        "paths": {"data_dir": str(services.data_dir)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers,
                  "topics": topic_overrides(tag)},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": "scorer-tests"},
        "scorer": {"metrics_port": 0, "session_timeout_ms": 6000, **scorer},
    }
    return load_settings("local", overrides=overrides)


def topic_overrides(tag: str) -> dict[str, str]:
    return {"readings": f"readings-{tag}", "predictions": f"predictions-{tag}", "dlq": f"dlq-{tag}",
            "model_events": f"events-{tag}", "labels": f"labels-{tag}"}


def settings_env(settings: Settings) -> dict[str, str]:
    """The MLOPS_* variables that make a subprocess load the same settings as ``scorer_settings``."""
    topics = settings.kafka.topics
    env = {
        "MLOPS_PATHS__DATA_DIR": str(settings.data_dir),
        "MLOPS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MLOPS_MLFLOW__TRACKING_URI": settings.mlflow.tracking_uri,
        "MLOPS_MLFLOW__REGISTERED_MODEL": settings.mlflow.registered_model,
        "MLOPS_MLFLOW__EXPERIMENT": settings.mlflow.experiment,
    }
    for key in ("readings", "predictions", "dlq", "model_events", "labels"):
        env[f"MLOPS_KAFKA__TOPICS__{key.upper()}"] = getattr(topics, key)
    for key, value in settings.scorer.model_dump().items():
        env[f"MLOPS_SCORER__{key.upper()}"] = str(value)
    return env


def reading(device: int, cycle: int, spec: FeatureSpec = SPEC, seed: int = 0) -> dict[str, Any]:
    """One valid reading of device ``dev-<device>``: sensors drift with the cycle, plus noise."""
    rng = np.random.default_rng(seed * 1_000_003 + device * 10_007 + cycle)
    return {
        "schema_version": 1,
        "device_id": f"dev-{device:03d}",
        "device_type": "engine",
        "event_time": (T0 + timedelta(seconds=60 * cycle)).isoformat(),
        "cycle": cycle,
        "sensors": {s: round(100.0 + i + 0.05 * cycle + float(rng.normal()), 4) for i, s in enumerate(spec.sensors)},
        "settings": {"setting_1": 0.5},
    }


def fleet_readings(devices: int, cycles: range, spec: FeatureSpec = SPEC) -> list[dict[str, Any]]:
    """Readings of ``devices`` devices for each cycle, interleaved as a fleet would send them."""
    return [reading(d, c, spec) for c in cycles for d in range(devices)]


def produce(settings: Settings, values: list[bytes], keys: list[str | None]) -> None:
    """Produce raw values to the readings topic (keyed: one device stays in one partition) and flush."""
    from mlops import kafka

    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))  # the broker auto-creates nothing
    errors: list[object] = []
    producer = kafka.producer(settings.kafka)
    for value, key in zip(values, keys, strict=True):
        kafka.produce(producer, settings.kafka.topics.readings, value, key,
                      on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(60) == 0 and not errors, f"readings not delivered: {errors[:3]}"


def produce_readings(settings: Settings, readings: list[dict[str, Any]]) -> None:
    produce(settings, [json.dumps(r).encode() for r in readings], [r["device_id"] for r in readings])


class CommittedReader:
    """Reads a topic with read_committed from the start, accumulating JSON records."""

    def __init__(self, settings: Settings, topic: str, **consumer_config: Any) -> None:
        import uuid

        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from mlops import kafka

        self.records: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))  # else nothing to assign
        self._consumer = kafka.consumer(settings.kafka, group_id=f"reader-{uuid.uuid4().hex[:8]}", **consumer_config)
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, timeout_s: float = 0.2) -> int:
        import time

        for message in self._consumer.consume(1000, timeout_s):
            if message.error() is None:
                self.records.append(json.loads(message.value()))
                self.received_at.append(time.time())
        return len(self.records)

    def wait_for(self, count: int, timeout_s: float, alive: Any = None, poll_s: float = 0.2) -> int:
        """Poll until ``count`` records arrived; fail with what was seen after ``timeout_s``.

        ``poll_s`` is each poll's timeout: arrivals are stamped when a poll returns, so a caller that
        measures latency polls briefly."""
        import time

        deadline = time.monotonic() + timeout_s
        while self.poll(poll_s) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.records)} of {count} records after {timeout_s}s")
            if alive is not None and not alive():
                raise AssertionError(f"scorer exited with {len(self.records)} of {count} records")
        return len(self.records)

    def drain(self, timeout_s: float = 60.0) -> int:
        """Read until every partition's position reaches its high watermark: all that is committed now.

        Call once the writers have stopped; a count taken then cannot grow."""
        import time

        deadline = time.monotonic() + timeout_s
        assignment = self._consumer.assignment()
        while True:
            self.poll(0.2)
            behind = []
            for tp in self._consumer.position(assignment):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
                if high > 0 and tp.offset < high:
                    behind.append((tp.partition, tp.offset, high))
            if not behind:
                return len(self.records)
            if time.monotonic() > deadline:
                raise AssertionError(f"partitions still behind their high watermark: {behind}")

    def close(self) -> None:
        self._consumer.close()
