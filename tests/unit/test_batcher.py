"""The API's batch scorer: concurrent requests share one feature computation and one model call, and
each gets what it would have got alone (its readings its only history, its rows its own answers)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from mlops.data.schemas import Reading, parse_reading
from mlops.features.compute import FeatureSpec
from mlops.features.state import DeviceWindows
from mlops.registry.loader import LoadedModel
from mlops.serve.batcher import BatchScorer

SPEC = FeatureSpec(("t", "v"), window=3)


class FeatureEcho:
    """A model whose probability is a fixed mix of its features: any row mixed up shows."""

    feature_names_in_ = np.array(SPEC.feature_names())
    weights = np.linspace(0.001, 0.005, len(SPEC.feature_names()))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        positive = np.tanh(np.abs((np.asarray(rows) * self.weights).sum(axis=1)))  # row by row: no BLAS rounding
        return np.column_stack([1 - positive, positive])


MODEL = LoadedModel("m", "1", None, FeatureEcho(), SPEC, threshold=0.5)


def history(device: str, values: list[float]) -> list[Reading]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [parse_reading(json.dumps({
        "schema_version": 1, "device_id": device, "device_type": "pump", "cycle": i + 1,
        "event_time": (t0 + timedelta(minutes=i)).isoformat(), "sensors": {"t": value, "v": 2 * value}}))
        for i, value in enumerate(values)]


def alone(readings: list[Reading]) -> np.ndarray:
    features = DeviceWindows(SPEC).update_and_compute((r.device_id, r.sensors) for r in readings)
    return MODEL.predict_proba(features)


def test_concurrent_requests_are_scored_in_one_call_each_as_if_alone() -> None:
    requests: list[Any] = [
        history("dev-a", [1.0, 2.0, 3.0, 4.0]),
        history("dev-a", [50.0]),  # the same device in another request: not the first one's history
        history("dev-b", [7.0, -7.0]) + history("dev-a", [9.0]),
        np.full((2, len(SPEC.feature_names())), 3.0),  # rows from the online store
    ]
    calls: list[int] = []

    async def all_at_once() -> list[np.ndarray]:
        scorer = BatchScorer(on_call=calls.append)
        try:
            return await asyncio.gather(*(scorer.predict_proba(MODEL, rows) for rows in requests))
        finally:
            scorer.close()

    answers = asyncio.run(all_at_once())
    assert calls == [4 + 1 + 3 + 2]  # one model call for every row of every request
    for rows, answer in zip(requests, answers, strict=True):
        expected = MODEL.predict_proba(rows) if isinstance(rows, np.ndarray) else alone(rows)
        np.testing.assert_allclose(answer, expected, rtol=0, atol=0)
    assert not np.allclose(answers[1], alone(history("dev-a", [1.0, 2.0, 3.0, 4.0, 50.0]))[-1:])


def test_a_failing_model_call_fails_its_requests_only() -> None:
    class Broken(FeatureEcho):
        def predict_proba(self, rows: np.ndarray) -> np.ndarray:
            raise RuntimeError("broken model")

    broken = LoadedModel("m", "2", None, Broken(), SPEC, threshold=0.5)

    async def both() -> list[Any]:
        scorer = BatchScorer()
        try:
            return await asyncio.gather(scorer.predict_proba(broken, history("dev-a", [1.0])),
                                        scorer.predict_proba(MODEL, history("dev-a", [1.0])),
                                        return_exceptions=True)
        finally:
            scorer.close()

    failed, served = asyncio.run(both())
    assert isinstance(failed, RuntimeError) and str(failed) == "broken model"
    np.testing.assert_allclose(served, alone(history("dev-a", [1.0])))
