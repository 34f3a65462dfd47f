"""Scoring: readings (``POST /v1/predict``) or a device's online features (``POST
/v1/predict/device/{device_id}``) in, the serving model's probabilities and decisions out.

Features come from the shared kernel through :class:`~mlops.features.state.DeviceWindows`: the
readings of one request are the history, per device in event-time order (a single reading is a
one-reading window). Concurrent requests are served together, one feature computation and one
model call per batch (:class:`~mlops.serve.batcher.BatchScorer`). The body is decoded by the
readings' fast decoder, or, when it refuses, by the pydantic model, which says why
(:mod:`mlops.data.schemas`). Nothing here calls MLflow.
"""

# No ``from __future__ import annotations``: FastAPI reads the route parameters' types at run time,
# and ServingDep is built inside add_routes().
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from mlops.data.schemas import Reading, fast_readings
from mlops.errors import MlopsError
from mlops.features.feast_repo import OnlineReader
from mlops.registry.loader import LoadedModel
from mlops.serve.api import models as m
from mlops.serve.api.deps import ServingProvider
from mlops.serve.api.errors import UnprocessableError
from mlops.serve.api.keeper import Serving
from mlops.serve.api.metrics import ApiMetrics
from mlops.serve.batcher import BatchScorer

__all__ = ["add_routes"]


def add_routes(app: FastAPI, serving: ServingProvider, scorer: BatchScorer, online: OnlineReader,
               metrics: ApiMetrics, body_adapter: TypeAdapter[Any], body_openapi: dict[str, Any], max_batch: int,
               ) -> None:
    """Add the scoring routes to ``app``; the predict body (at most ``max_batch`` readings) is validated
    by ``body_adapter`` and described by ``body_openapi`` (both from
    :func:`~mlops.serve.api.models.predict_request` for ``max_batch``)."""
    ServingDep = Annotated[Serving, Depends(serving)]

    @app.post("/v1/predict", response_model=m.PredictResponse, responses={**m.ERRORS, **m.NOT_READY},
              openapi_extra=body_openapi,
              summary="Score one reading or a batch (a batch of one device in time order is its history)")
    async def predict(request: Request, current: ServingDep) -> Response:
        readings = await _validated_body(request, body_adapter, max_batch)
        model = current.model
        order = _history_order(model, readings)
        probabilities = np.empty(len(readings))
        probabilities[order] = await scorer.predict_proba(model, [readings[i] for i in order])
        metrics.predictions.inc(len(readings))
        return _json(_answer(model, readings, probabilities))

    @app.post("/v1/predict/device/{device_id:path}", response_model=m.DevicePredictResponse,
              responses=m.DEVICE_ERRORS, summary="Score a device from its latest features in the Feast online store")
    async def predict_device(device_id: Annotated[str, Path(**m.DEVICE_ID_LIMITS)], current: ServingDep,
                             ) -> Response:
        model = current.model
        try:
            found = await run_in_threadpool(online.read, model.spec, device_id)
        except MlopsError as err:
            raise HTTPException(503, f"online features unavailable: {err}") from err
        if found is None:
            raise HTTPException(404, f"device {device_id!r} has no features in the online store (unknown device, "
                                     f"or its features were never materialized: `mlops features materialize`)")
        probability = float((await scorer.predict_proba(model, found.values))[0])
        metrics.predictions.inc()
        return _json({
            "model_name": model.name, "model_version": model.version, "device_id": device_id,
            "features_time": found.event_time.isoformat(), "probability": probability,
            "decision": int(probability >= model.threshold),
        })


async def _validated_body(request: Request, adapter: TypeAdapter[Any], max_batch: int) -> list[Reading]:
    """The readings of the request's JSON body, decoded straight from its bytes; 415 or 422 if it is
    not a body ``adapter`` accepts."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(415, f"Content-Type {content_type!r}: send the body as application/json")
    raw = await request.body()
    readings = fast_readings(raw, max_batch)
    if readings is not None:
        return readings
    try:
        body = adapter.validate_json(raw)
        return [body] if isinstance(body, Reading) else body
    except PydanticValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from err


def _json(content: dict[str, Any]) -> Response:
    # pydantic-core's encoder: several times faster than json.dumps on a batch's predictions.
    return Response(to_json(content), media_type="application/json")


def _history_order(model: LoadedModel, readings: list[Reading]) -> list[int]:
    """The request indices of the readings in event-time order (each device's history in order).

    A 422 names every reading that lacks a sensor the model needs.
    """
    sensors = model.spec.sensors
    problems = [
        {"field": f"body[{i}].sensors.{s}" if len(readings) > 1 else f"body.sensors.{s}",
         "message": f"missing: model version {model.version} needs sensor {s!r}", "type": "missing"}
        for i, r in enumerate(readings) for s in sensors if s not in r.sensors
    ]
    if problems:
        raise UnprocessableError(problems)
    return sorted(range(len(readings)), key=lambda i: readings[i].event_time)  # stable: ties keep request order


def _answer(model: LoadedModel, readings: list[Reading], probabilities: np.ndarray) -> dict[str, Any]:
    """The response body: one prediction per reading, in request order."""
    threshold = model.threshold
    return {
        "model_name": model.name,
        "model_version": model.version,
        "predictions": [
            {"device_id": r.device_id, "event_time": r.event_time.isoformat(), "cycle": r.cycle,
             "probability": p, "decision": int(p >= threshold)}
            for r, p in zip(readings, probabilities.tolist(), strict=True)
        ],
    }
