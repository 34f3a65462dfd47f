"""The prediction record follows docs/contracts.md 'Predictions'."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from mlops.data.schemas import encode_predictions, parse_reading
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel


def test_prediction_carries_the_contract_fields_and_threshold_decision() -> None:
    spec = FeatureSpec(("s_2",), window=3)
    model = LoadedModel("iot-failure", "7", "run", object(), spec, threshold=0.6)
    raw = {"schema_version": 1, "device_id": "dev-1", "device_type": "x", "event_time": "2026-01-01T00:00:00Z",
           "cycle": 4, "sensors": {"s_2": 1.5}}
    reading = parse_reading(json.dumps(raw))
    features = np.array([[1.0, 0.0, 0.0, 1.5, 1.0], [1.0, 0.0, 0.0, 1.5, 1.0]])
    out = [json.loads(b) for b in encode_predictions(
        [reading, reading], [("r", 2, 10), ("r", 2, 11)], features, np.array([0.59, 0.6]), model,
        datetime(2026, 1, 1, tzinfo=UTC))]
    assert set(out[0]) == {"schema_version", "device_id", "event_time", "cycle", "probability", "decision",
                           "model_name", "model_version", "features", "source", "scored_at"}
    assert [p["decision"] for p in out] == [0, 1]
    assert out[1]["source"] == {"topic": "r", "partition": 2, "offset": 11}
    assert out[0]["features"] == dict(zip(spec.feature_names(), features[0].tolist(), strict=True))
    assert (out[0]["model_name"], out[0]["model_version"], out[0]["cycle"]) == ("iot-failure", "7", 4)
