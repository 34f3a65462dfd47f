"""Stand-ins for the training job and the device fleet.

``register_model`` trains a tiny sklearn pipeline on a FeatureSpec's feature names and registers
it in the real MLflow registry with the contract's tags (docs/contracts.md), optionally moving
the ``champion`` alias to it. ``reading`` makes deterministic readings for a small fleet.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings, load_settings
from mlops.data.schemas import SCHEMA_VERSION
from mlops.features.compute import FeatureSpec
from mlops.mlflow import tracking_client, use_tracking_server
from mlops.testing.topics import topic_overrides

__all__ = ["SPEC", "T0", "fleet_readings", "reading", "register_model", "scorer_settings", "settings_env"]

SPEC = FeatureSpec(sensors=("s_2", "s_3", "s_4"), window=5)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def register_model(settings: Settings, spec: FeatureSpec = SPEC, *, seed: int = 0, threshold: float = 0.5,
                   broken: bool = False, alias: str | None = "champion") -> str:
    """Train, log and register a model; return its version. ``broken``: trained on other columns,
    so it loads but fails the smoke test (predict_proba raises on the contract's columns)."""
    # Deferred: heavy (MLflow and scikit-learn take seconds to import; only callers that register pay).
    import mlflow
    import mlflow.sklearn
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

    use_tracking_server(settings)
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
    client = tracking_client(settings)
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
        "schema_version": SCHEMA_VERSION,
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
