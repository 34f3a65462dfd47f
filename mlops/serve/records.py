"""The scorer's output records: predictions (docs/contracts.md 'Predictions')."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from pydantic_core import to_json

from mlops.data.schemas import Reading
from mlops.registry.loader import LoadedModel

PREDICTION_SCHEMA_VERSION = 1


def encode_predictions(
    readings: Sequence[Reading],
    sources: Sequence[tuple[str, int, int]],
    features: np.ndarray,
    probabilities: np.ndarray,
    model: LoadedModel,
    scored_at: datetime,
) -> list[bytes]:
    """One JSON prediction per reading, in order; ``sources`` are (topic, partition, offset).

    pydantic-core's serialiser: about five times faster than ``json.dumps`` on the scorer's hot path.
    """
    names = model.spec.feature_names()
    scored = scored_at.isoformat()
    rows = features.tolist()  # one conversion for the batch: plain floats serialise fast
    out = []
    for reading, (topic, partition, offset), row, probability in zip(
        readings, sources, rows, probabilities.tolist(), strict=True
    ):
        out.append(to_json({
            "schema_version": PREDICTION_SCHEMA_VERSION,
            "device_id": reading.device_id,
            "event_time": reading.event_time.isoformat(),
            "cycle": reading.cycle,
            "probability": probability,
            "decision": int(probability >= model.threshold),
            "model_name": model.name,
            "model_version": model.version,
            "features": dict(zip(names, row, strict=True)),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "scored_at": scored,
        }))
    return out
